#!/usr/bin/env bash
# Round 16 (issue #11): the reverse pass releases the forward pass's values as it goes (saved
# values and intermediate outputs), and `MAGMA_CUDA_DETERMINISTIC=0` lets the algorithm search
# take non-deterministic convolutions (PyTorch's default). All GPU tests; bench-unet
# fp32/tf32/bf16 beside PyTorch, then the same three modes with MAGMA_CUDA_DETERMINISTIC=0.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi -L
(cd gpu-bundle && timeout 200 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh: (PASS|FAIL|[0-9])|FAILED|panicked' "$OUT/tests.log" | tail -10
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
timeout 200 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --json "$OUT/bench_det.json" > "$OUT/bench_det.log" 2>&1; echo "exit $?" >> "$OUT/bench_det.log"
grep -E "\| 64|exit" "$OUT/bench_det.log" | tail -4
MAGMA_CUDA_DETERMINISTIC=0 timeout 150 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --json "$OUT/bench_nondet.json" > "$OUT/bench_nondet.log" 2>&1; echo "exit $?" >> "$OUT/bench_nondet.log"
grep -E "\| 64|exit" "$OUT/bench_nondet.log" | tail -4
grep -ho '"mode":"[a-z0-9]*"\|"peak_reserved_gib":[0-9.]*' "$OUT"/bench_det.json | paste - - | head -4
