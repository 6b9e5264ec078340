#!/usr/bin/env bash
# Round 8 (issue #11): the bf16 batch-norm finalisation one warp per channel, bf16x2 accesses in
# the batch-norm and ReLU kernels, 32-bit index division in the row copies. All GPU tests, the
# bf16 parity tests, bench-unet fp32/tf32/bf16 beside PyTorch (bf16 also torch.compile) at both
# sizes, and the kernel-time profile of one bf16 step.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
(cd gpu-bundle && timeout 300 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh: (PASS|FAIL|[0-9])|FAILED|panicked|note:' "$OUT/tests.log" | tail -10
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
export NCCL_NVLS_ENABLE=0
timeout 60 gpu-bundle/tests/cuda_parity_cudnn-* bf16_ --nocapture 2>&1 | grep -E 'bf16 chain|test result|panicked|exceeds'
timeout 60 gpu-bundle/tests/cuda_training_parity-* bf16 --test-threads=1 --nocapture 2>&1 | grep -E 'cpu|gpu|test result|panicked'
timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench_a.json" > "$OUT/bench_a.log" 2>&1; echo "exit $?" >> "$OUT/bench_a.log"
tail -6 "$OUT/bench_a.log"
timeout 150 "$bin" bench-unet --device cuda --configs 16:128:32 --modes tf32,bf16 --iters 20 --warm 5 --peer python3 > "$OUT/bench_small.log" 2>&1; echo "exit $?" >> "$OUT/bench_small.log"
tail -3 "$OUT/bench_small.log"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 120 "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
  --csv --print-units base "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 \
  --iters 1 --warm 3 --profile-steps > "$OUT/ncu_bf16.csv" 2> "$OUT/ncu_bf16.err"; echo "ncu exit $?"
