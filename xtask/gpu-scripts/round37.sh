#!/usr/bin/env bash
# Round 37 (issue #11), on the H100: does the data path keep up? train-unet from an .h5 on the
# GPU at the benchmark's model (U-Net base 64, depth 4, 256², batch 16) in bf16 and TF32: the
# Pet sample stored at 128² (gpu-data/pets128.h5, made here by `cargo xtask convert-hdf5`; its
# 101 trainval images, 6 steps an epoch), resized to 256² and flipped by the loader's threads as a
# training run does, 4 loader threads
# and 1; each epoch logs its training images/s and the seconds it waited for the loader. No
# tests (round 36 ran them on this code's kernels).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi -L; nproc
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
common="--device cuda --data gpu-data/pets128.h5 --split trainval --val-split test --size 256 --base 64 --depth 4 --batch 16 --epochs 6 --augment hflip --loss ce --quiet"
for run in "bf16 4" "bf16 1" "tf32 4"; do
  set -- $run
  timeout 150 "$bin" train-unet $common --precision $1 --workers $2 --out "runs/data-$1-$2" > "$OUT/train-$1-$2.log" 2>&1
  echo "== $1, $2 loader threads: exit $?"
  grep -E "training:|^ *[0-9]+ " "$OUT/train-$1-$2.log" | tail -8
done
