#!/usr/bin/env bash
# Round 2 on the GPU machine: all GPU tests (incl. NCCL), the CPU-vs-GPU loss parity printed,
# a 1-GPU NCCL training run, and the benchmarks beside PyTorch (GPU fp32/tf32, CPU on 2 and 8 cores).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
(cd gpu-bundle && timeout 240 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -h 'run.sh' "$OUT/tests.log" | tail -9
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
timeout 120 gpu-bundle/tests/cuda_training_parity-* --test-threads=1 --nocapture 2>&1 | grep -E 'cpu|gpu|test result' > "$OUT/loss_parity.log"
cat "$OUT/loss_parity.log"
export NCCL_NVLS_ENABLE=0
MAGMA_RANK=0 MAGMA_WORLD_SIZE=1 timeout 120 "$bin" train-unet --distributed --device cuda --data gpu-data/pets128.h5 --size 128 --base 16 --depth 4 --batch 16 --lr 1e-3 --epochs 5 --quiet --out runs/nccl1 > "$OUT/nccl_train.log" 2>&1; echo "exit $?" >> "$OUT/nccl_train.log"
tail -4 "$OUT/nccl_train.log"
timeout 200 "$bin" bench-unet --device cuda --configs 64:256:16,16:128:32 --modes fp32,tf32 --iters 20 --warm 5 --peer python3 > "$OUT/bench_gpu.log" 2>&1; echo "exit $?" >> "$OUT/bench_gpu.log"
tail -8 "$OUT/bench_gpu.log"
timeout 150 taskset -c 0-1 "$bin" bench-unet --device cpu --threads 2 --configs 16:128:8 --iters 5 --warm 2 --peer python3 > "$OUT/bench_cpu2.log" 2>&1; echo "exit $?" >> "$OUT/bench_cpu2.log"
tail -4 "$OUT/bench_cpu2.log"
timeout 100 taskset -c 0-7 "$bin" bench-unet --device cpu --threads 8 --configs 16:128:8 --iters 5 --warm 2 --peer python3 > "$OUT/bench_cpu8.log" 2>&1; echo "exit $?" >> "$OUT/bench_cpu8.log"
tail -4 "$OUT/bench_cpu8.log"
lscpu | grep -E 'Model name|Flags' | cut -c1-200 > "$OUT/cpu.txt"
