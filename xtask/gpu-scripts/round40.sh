#!/usr/bin/env bash
# Round 40 (issue #11), on the H100: the training loop no longer waits for the device between
# steps. Each step's forward and backward pass is queued, the next batch taken and its upload
# queued, then the previous step's loss read through a queued device→host copy (waiting only
# for that step's work), then this step's Adam update queued, guarded on the device by the loss
# plus the gradients' sum; the uploads queued by a thread of their own (the copy into pinned memory
# off the training thread), and each epoch logs the host's time per step. All GPU tests; our step benchmark (TF32, bf16) and train-unet from
# gpu-data/pets128.h5 as in round 39 (bf16 with 4 and 8 loader threads, TF32 with 8).
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | grep -v " 0 passed" | head -24
timeout 120 "$bin" bench-unet --device cuda --configs 64:256:16 --modes tf32,bf16 --iters 20 --warm 5 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "bench exit $?"; grep -E "\| 64|rror" "$OUT/bench.log" | tail -4
common="--device cuda --data gpu-data/pets128.h5 --split trainval --val-split test --size 256 --base 64 --depth 4 --batch 16 --epochs 6 --augment hflip --loss ce --quiet"
for run in "bf16 4" "bf16 8" "tf32 8"; do
  set -- $run
  timeout 150 "$bin" train-unet $common --precision $1 --workers $2 --out "runs/data-$1-$2" > "$OUT/train-$1-$2.log" 2>&1
  echo "== $1, $2 loader threads: exit $?"
  grep -E "training:|^ *[0-9]+ " "$OUT/train-$1-$2.log" | tail -12
done
