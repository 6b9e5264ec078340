#!/usr/bin/env bash
# Round 5 (issue #11): bf16 convolutions on TENSOR_OP math, one NHWC conversion of dy shared by
# both gradients, no data gradient for the network input, TF32 in NHWC by default. Tests, the bf16
# Pet recipe, bench-unet fp32/tf32/bf16 beside PyTorch (bf16 also torch.compile), TF32 in NCHW.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
(cd gpu-bundle && timeout 300 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh: (PASS|FAIL|[0-9])|FAILED|panicked|note:' "$OUT/tests.log" | tail -12
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
export NCCL_NVLS_ENABLE=0
timeout 60 gpu-bundle/tests/cuda_training_parity-* bf16 --test-threads=1 --nocapture 2>&1 | grep -E 'cpu|gpu|test result|panicked'
recipe="--data gpu-data/pets128.h5 --size 128 --base 16 --depth 4 --batch 16 --lr 1e-3 --epochs 30 --augment hflip --loss ce --seed 0 --quiet"
timeout 120 "$bin" train-unet --device cuda --precision bf16 $recipe --out runs/pets-bf16 > "$OUT/train_bf16.log" 2>&1; echo "exit $?" >> "$OUT/train_bf16.log"
grep -E 'final|exit|rror' "$OUT/train_bf16.log" | tail -2
timeout 400 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench_a.json" > "$OUT/bench_a.log" 2>&1; echo "exit $?" >> "$OUT/bench_a.log"
tail -6 "$OUT/bench_a.log"
MAGMA_CUDA_CONV_NHWC=0 timeout 100 "$bin" bench-unet --device cuda --configs 64:256:16 --modes tf32 --iters 20 --warm 5 > "$OUT/bench_tf32_nchw.log" 2>&1; echo "exit $?" >> "$OUT/bench_tf32_nchw.log"
tail -2 "$OUT/bench_tf32_nchw.log"
timeout 200 "$bin" bench-unet --device cuda --configs 16:128:32 --modes tf32,bf16 --iters 20 --warm 5 --peer python3 > "$OUT/bench_small.log" 2>&1; echo "exit $?" >> "$OUT/bench_small.log"
tail -4 "$OUT/bench_small.log"
