#!/usr/bin/env bash
# Round 41 (issue #11), on the H100: the upload ring of pinned buffers from 4 to 8 slots (a slot
# is refilled only once the copy that last read it has run, so with the batch images now
# uploaded each step besides the labels and the Adam table, 4 slots let the host run only about
# a step ahead). All GPU tests; the step benchmark (TF32, bf16), bf16 once more with the host
# time per graph op (MAGMA_PROFILE_HOST=1); train-unet from gpu-data/pets128.h5 as in round 40
# (bf16 and TF32, 8 loader threads, 8 epochs).
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | grep -v " 0 passed" | head -24
timeout 120 "$bin" bench-unet --device cuda --configs 64:256:16 --modes tf32,bf16 --iters 20 --warm 5 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "bench exit $?"; grep -E "\| 64|rror|note:" "$OUT/bench.log" | tail -6
MAGMA_PROFILE_HOST=1 timeout 120 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 > "$OUT/bench-host.log" 2>&1
echo "host-profile bench exit $?"
common="--device cuda --data gpu-data/pets128.h5 --split trainval --val-split test --size 256 --base 64 --depth 4 --batch 16 --epochs 8 --augment hflip --loss ce --quiet"
for run in "bf16 8" "tf32 8"; do
  set -- $run
  timeout 150 "$bin" train-unet $common --precision $1 --workers $2 --out "runs/data-$1-$2" > "$OUT/train-$1-$2.log" 2>&1
  echo "== $1, $2 loader threads: exit $?"
  grep -E "training:" "$OUT/train-$1-$2.log" | tail -12 | sed -E 's/images in ([0-9.]+) s = ([0-9.]+) images\/s; waited for data ([0-9.]+) s for the first batch, ([0-9.]+) s for the others while the device ran a step; host per step:/\2 img\/s, data wait \3+\4 s; host/'
done
