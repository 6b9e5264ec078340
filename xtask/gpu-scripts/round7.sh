#!/usr/bin/env bash
# Round 7 (issue #11): bf16 activations between convolution, batch norm (our NHWC kernels) and ReLU (bf16 NHWC
# tensors; other ops widen them to fp32). Tests, bf16 chain errors, the bf16 Pet recipe, and
# bench-unet tf32/bf16 beside PyTorch, and the small configuration.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
(cd gpu-bundle && timeout 300 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh: (PASS|FAIL|[0-9])|FAILED|panicked|note:|^test .*FAIL' "$OUT/tests.log" | tail -14
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
export NCCL_NVLS_ENABLE=0
timeout 60 gpu-bundle/tests/cuda_parity_cudnn-* bf16_ --nocapture 2>&1 | grep -E 'bf16 chain|test result|panicked|exceeds|relative error'
timeout 60 gpu-bundle/tests/cuda_training_parity-* bf16 --test-threads=1 --nocapture 2>&1 | grep -E 'cpu|gpu|test result|panicked'
recipe="--data gpu-data/pets128.h5 --size 128 --base 16 --depth 4 --batch 16 --lr 1e-3 --epochs 30 --augment hflip --loss ce --quiet"
for seed in 0; do
  timeout 120 "$bin" train-unet --device cuda --precision bf16 $recipe --seed $seed --out runs/pets-bf16-$seed > "$OUT/train_bf16_$seed.log" 2>&1; echo "exit $?" >> "$OUT/train_bf16_$seed.log"
  grep -E 'final|exit|rror' "$OUT/train_bf16_$seed.log" | tail -2
done
timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench_a.json" > "$OUT/bench_a.log" 2>&1; echo "exit $?" >> "$OUT/bench_a.log"
tail -5 "$OUT/bench_a.log"
timeout 150 "$bin" bench-unet --device cuda --configs 16:128:32 --modes bf16 --iters 20 --warm 5 --peer python3 > "$OUT/bench_small.log" 2>&1; echo "exit $?" >> "$OUT/bench_small.log"
tail -2 "$OUT/bench_small.log"
