#!/usr/bin/env bash
# Round 12 (issues #11 and #10), on a 2-GPU machine: multi-tensor Adam, fused bf16 BN+ReLU,
# 16-byte row copies, tiled bf16 max-pool. All GPU tests; bench-unet fp32/tf32/bf16 beside
# PyTorch (bf16 also torch.compile) at both sizes; the host time per op of a bf16 step; the 2-GPU
# bf16 weak-scaling run.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi -L
(cd gpu-bundle && timeout 200 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh: (PASS|FAIL|[0-9])|FAILED|panicked' "$OUT/tests.log" | tail -10
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
export NCCL_NVLS_ENABLE=0
timeout 240 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench_a.json" > "$OUT/bench_a.log" 2>&1; echo "exit $?" >> "$OUT/bench_a.log"
grep -E "note|\| 64|exit" "$OUT/bench_a.log" | tail -8
timeout 120 "$bin" bench-unet --device cuda --configs 16:128:32 --modes tf32,bf16 --iters 20 --warm 5 --peer python3 > "$OUT/bench_small.log" 2>&1; echo "exit $?" >> "$OUT/bench_small.log"
grep -E "\| 16|exit" "$OUT/bench_small.log" | tail -3
MAGMA_PROFILE_HOST=1 timeout 60 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 > "$OUT/bench_profile.log" 2>&1
grep -vE '^\{|^\|' "$OUT/bench_profile.log" | head -24
MOUT=/tmp/multi; mkdir -p $MOUT
OUT=$MOUT MODES=bf16 timeout 150 xtask/gpu-scripts/multigpu.sh > "$OUT/multi.log" 2>&1
cat $MOUT/one16.err $MOUT/multi_r0.err >> "$OUT/multi.log"
grep -vE "^losses|tail:" "$OUT/multi.log" | tail -8
