#!/usr/bin/env bash
# Round 9 (issues #11 and #10), on a 2-GPU machine: host→device copies through a ring of pinned
# buffers without waiting, the bench's loss read after the timed steps, bf16 NHWC max-pool,
# concat/split, add, channel bias and bias gradient (nothing widened in the U-Net's bf16 step).
# All GPU tests, bench-unet fp32/tf32/bf16 beside PyTorch on GPU 0, then the 2-GPU bf16 run with
# NCCL's transport choice logged.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi -L; nvidia-smi topo -m > "$OUT/topo.txt" 2>&1; head -5 "$OUT/topo.txt"
(cd gpu-bundle && timeout 240 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh: (PASS|FAIL|[0-9])|FAILED|panicked|note:|test result' "$OUT/tests.log" | tail -14
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
export NCCL_NVLS_ENABLE=0
timeout 200 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 ${PEER_COMPILE:-} --json "$OUT/bench_a.json" > "$OUT/bench_a.log" 2>&1; echo "exit $?" >> "$OUT/bench_a.log"
tail -6 "$OUT/bench_a.log"
if [ "${MULTI:-1}" = 1 ]; then
  NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,P2P,SHM,NET MODES=bf16 timeout 150 xtask/gpu-scripts/multigpu.sh > "$OUT/multi.log" 2>&1
  tail -8 "$OUT/multi.log"
  grep -hE "via|P2P|SHM|NVLS|Channel 00|transport|NET/" "$OUT"/multi_r0.err | sort | uniq -c | sort -rn | head -12
fi
