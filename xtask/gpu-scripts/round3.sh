#!/usr/bin/env bash
# Round 3: tests again (checkpoint v2, reliability changes), the 1-GPU NCCL training run, and a GPU
# recipe run with resume from its checkpoint.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
(cd gpu-bundle && timeout 240 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -h 'run.sh' "$OUT/tests.log" | tail -9
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
export NCCL_NVLS_ENABLE=0
recipe="--data gpu-data/pets128.h5 --size 128 --base 16 --depth 4 --batch 16 --lr 1e-3 --quiet"
MAGMA_RANK=0 MAGMA_WORLD_SIZE=1 NCCL_DEBUG=INFO timeout 150 "$bin" train-unet --distributed --device cuda $recipe --epochs 10 --out runs/nccl1 > "$OUT/nccl_train.log" 2>&1; echo "exit $?" >> "$OUT/nccl_train.log"
grep -E 'NCCL INFO (NCCL version|comm )|^ +[0-9]+ |final|exit|rank|Error|error' "$OUT/nccl_train.log" | tail -16
timeout 100 "$bin" train-unet --device cuda $recipe --epochs 4 --out runs/gpu-resume > "$OUT/resume.log" 2>&1; echo "exit $?" >> "$OUT/resume.log"
timeout 100 "$bin" train-unet --device cuda --resume runs/gpu-resume --epochs 6 --quiet >> "$OUT/resume.log" 2>&1; echo "exit $?" >> "$OUT/resume.log"
grep -E '^ +[0-9]+ |final|exit|warning|Error' "$OUT/resume.log" | tail -12
ls -la runs/gpu-resume
