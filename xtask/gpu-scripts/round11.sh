#!/usr/bin/env bash
# Round 11 (issue #11): the tiled bf16 max-pool kernels and the one-pass label check; the parity
# tests, then one bf16 bench with the host time per op (MAGMA_PROFILE_HOST=1) and one without.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
nvidia-smi -L
for t in cuda_parity_cudnn cuda_training_parity; do
  timeout 60 gpu-bundle/tests/$t-* --test-threads=1 2>&1 | grep -E "test result|panicked|FAILED|exceeds" | head -5
done
MAGMA_PROFILE_HOST=1 timeout 100 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 > "$OUT/bench_profile.log" 2>&1
grep -vE '^\{' "$OUT/bench_profile.log" | head -60
timeout 100 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 --peer python3 > "$OUT/bench_bf16.log" 2>&1
grep -E "note|\| 64" "$OUT/bench_bf16.log" | tail -3
