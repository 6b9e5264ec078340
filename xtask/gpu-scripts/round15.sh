#!/usr/bin/env bash
# Round 15 (issues #11 and #10), the session's closing measurement on a 2-GPU machine: the
# upsampled half of each skip concatenation released once concatenated (Graph::forget), the
# batch-norm backward back on its pair kernel. All GPU tests; bench-unet fp32/tf32/bf16 beside
# PyTorch (bf16 also torch.compile) at both sizes; the 2-GPU bf16 weak-scaling run.
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
timeout 120 "$bin" bench-unet --device cuda --configs 16:128:32 --modes tf32,bf16 --iters 20 --warm 5 --peer python3 --json "$OUT/bench_small.json" > "$OUT/bench_small.log" 2>&1; echo "exit $?" >> "$OUT/bench_small.log"
grep -E "\| 16|exit" "$OUT/bench_small.log" | tail -3
grep -ho '"mode":"[a-z0-9]*"\|"peak_reserved_gib":[0-9.]*' "$OUT"/bench_*.json | paste - - | head
MOUT=/tmp/multi; mkdir -p $MOUT
OUT=$MOUT MODES=bf16 timeout 150 xtask/gpu-scripts/multigpu.sh > "$OUT/multi.log" 2>&1
cat $MOUT/one16.err $MOUT/multi_r0.err >> "$OUT/multi.log"
grep -vE "tail:" "$OUT/multi.log" | tail -10
