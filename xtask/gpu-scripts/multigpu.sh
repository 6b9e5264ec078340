#!/usr/bin/env bash
# Issue #10 on a multi-GPU machine: U-Net base 64, 256², per-GPU batch 16, on 1 and all GPUs
# (NCCL, one process per GPU), img/s and weak-scaling efficiency, and the first 20 step losses of
# the N-GPU run against a 1-GPU run with the same global batch. NVLink multicast stays off.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
n=$(nvidia-smi -L | wc -l); nvidia-smi -L
modes=${MODES:-tf32,fp32}
cfg="--configs 64:256:16 --modes $modes --warm 5"
timeout 150 "$bin" bench-unet --device cuda:0 $cfg --iters 15 > "$OUT/one16.jsonl" 2> "$OUT/one16.err"
timeout 150 "$bin" bench-unet --device cuda:0 --configs 64:256:$((16 * n)) --modes $modes --warm 5 --iters 15 > "$OUT/one_global.jsonl" 2> "$OUT/one_global.err"
pids=()
for r in $(seq 0 $((n - 1))); do
  MAGMA_RANK=$r MAGMA_WORLD_SIZE=$n MAGMA_LOCAL_RANK=$r MAGMA_JOB_ID=weak$n timeout 200 \
    "$bin" bench-unet --distributed --device cuda:$r $cfg --iters 15 > "$OUT/multi_r$r.jsonl" 2> "$OUT/multi_r$r.err" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait $p; echo "rank exit $?"; done
tail -3 "$OUT"/*.err
python3 - "$OUT" "$n" <<'PY'
import json, sys, os
out, n = sys.argv[1], int(sys.argv[2])
def rows(f):
    return [json.loads(l) for l in open(os.path.join(out, f)) if l.startswith('{"side"')]
one, glob, multi = rows("one16.jsonl"), rows("one_global.jsonl"), rows("multi_r0.jsonl")
print(f"| mode | GPUs | img/s | img/s per GPU | weak-scaling efficiency | max rel. loss diff, 20 steps vs 1 GPU batch {16*n} |")
print("|---|---:|---:|---:|---:|---:|")
for o, g, m in zip(one, glob, multi):
    d = max(abs(a - b) / abs(b) for a, b in zip(m["step_losses"], g["step_losses"]))
    print(f"| {o['mode']} | 1 | {o['train_img_s']:.1f} | {o['train_img_s']:.1f} | 100% | – |")
    print(f"| {m['mode']} | {m['ranks']} | {m['train_img_s']:.1f} | {m['per_rank_img_s']:.1f} | {100*m['per_rank_img_s']/o['train_img_s']:.1f}% | {d:.2e} |")
    print("losses 1 GPU :", [round(x, 5) for x in g["step_losses"]])
    print(f"losses {n} GPUs:", [round(x, 5) for x in m["step_losses"]])
PY
