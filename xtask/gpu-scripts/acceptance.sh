#!/usr/bin/env bash
# Issue #6 acceptance on the GPU machine: parity tests, then the Pet-sample recipe on the GPU (3 seeds)
# while the same binary trains it on CPU cores (3 seeds) for the mIoU comparison.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"
data="$root/gpu-data/pets128.h5"
recipe="--data $data --size 128 --base 16 --depth 4 --batch 16 --lr 1e-3 --epochs 30 --augment hflip --loss ce --quiet"
bin="$root/gpu-bundle/xtask-tasks"
nproc; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
# CPU runs in the background on cores 4-15 (4 threads each).
for s in 0 1 2; do
  lo=$((4 + 4 * s)); hi=$((lo + 3))
  (timeout 540 taskset -c $lo-$hi "$bin" train-unet --device cpu --threads 4 $recipe --seed $s --out "$root/runs/cpu-s$s" > "$OUT/cpu-s$s.log" 2>&1; echo "exit $?" >> "$OUT/cpu-s$s.log") &
done
(cd "$root/gpu-bundle" && timeout 300 taskset -c 0-3 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
tail -3 "$OUT/tests.log"
for s in 0 1 2; do
  start=$SECONDS
  timeout 200 taskset -c 0-3 "$bin" train-unet --device cuda $recipe --seed $s --out "$root/runs/gpu-s$s" > "$OUT/gpu-s$s.log" 2>&1
  echo "exit $? in $((SECONDS - start)) s" >> "$OUT/gpu-s$s.log"
  tail -2 "$OUT/gpu-s$s.log"
done
wait
for s in 0 1 2; do tail -2 "$OUT/cpu-s$s.log"; done
grep -h 'test result\|PASS\|FAIL\|panicked' "$OUT/tests.log" | tail -30
