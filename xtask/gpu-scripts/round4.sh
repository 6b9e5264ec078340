#!/usr/bin/env bash
# Round 4 (issue #11): all GPU tests incl. the bf16 / NHWC convolution parity and bf16 training
# parity, the Pet recipe in bf16 vs fp32, and bench-unet fp32/tf32/bf16 beside PyTorch (eager;
# bf16 also torch.compile), plus TF32 with NHWC convolutions.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt"
(cd gpu-bundle && timeout 300 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh|test result|FAILED|panicked|note:' "$OUT/tests.log" | tail -24
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
export NCCL_NVLS_ENABLE=0
timeout 120 gpu-bundle/tests/cuda_training_parity-* --test-threads=1 --nocapture 2>&1 | grep -E 'cpu|gpu|test result|panicked' > "$OUT/loss_parity.log"
cat "$OUT/loss_parity.log"
recipe="--data gpu-data/pets128.h5 --size 128 --base 16 --depth 4 --batch 16 --lr 1e-3 --epochs 30 --augment hflip --loss ce --seed 0 --quiet"
for p in fp32 bf16; do
  timeout 120 "$bin" train-unet --device cuda --precision $p $recipe --out runs/pets-$p > "$OUT/train_$p.log" 2>&1; echo "exit $?" >> "$OUT/train_$p.log"
  echo "== train $p"; grep -E 'mIoU|final|exit|rror' "$OUT/train_$p.log" | tail -3
done
timeout 420 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench_a.json" > "$OUT/bench_a.log" 2>&1; echo "exit $?" >> "$OUT/bench_a.log"
tail -7 "$OUT/bench_a.log"
MAGMA_CUDA_CONV_NHWC=1 timeout 120 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32 --iters 20 --warm 5 > "$OUT/bench_nhwc.log" 2>&1; echo "exit $?" >> "$OUT/bench_nhwc.log"
tail -5 "$OUT/bench_nhwc.log"
timeout 200 "$bin" bench-unet --device cuda --configs 16:128:32 --modes tf32,bf16 --iters 20 --warm 5 --peer python3 > "$OUT/bench_small.log" 2>&1; echo "exit $?" >> "$OUT/bench_small.log"
tail -5 "$OUT/bench_small.log"
