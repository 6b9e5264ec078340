#!/usr/bin/env bash
# Round 44 (issue #11), on the H100: the final build of the session (after the review: two
# steps' gradients at most when a step is queued again, panics in the loader and the staging
# thread delivered as errors, queue_read's pointer and buffer hygiene, read_later of host tensors
# read at once, the epoch order shuffled outside the workers' lock). All GPU tests; the step
# benchmark beside PyTorch (eager, torch.compile in bf16); train-unet from gpu-data/pets128.h5 in
# bf16 and TF32 (8 epochs, 8 loader threads).
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | grep -v " 0 passed" | head -24
bench_vs_peer bench --peer-compile bf16
common="--device cuda --data gpu-data/pets128.h5 --split trainval --val-split test --size 256 --base 64 --depth 4 --batch 16 --epochs 8 --augment hflip --loss ce --quiet --workers 8"
for mode in bf16 tf32; do
  timeout 150 "$bin" train-unet $common --precision $mode --out "runs/data-$mode" > "$OUT/train-$mode.log" 2>&1
  echo "== $mode: exit $?"
  grep -E "^ +[0-9]+ " "$OUT/train-$mode.log" | tail -2
  grep -E "training:" "$OUT/train-$mode.log" | tail -12 | sed -E 's/images in ([0-9.]+) s = ([0-9.]+) images\/s; waited for data ([0-9.]+) s for the first batch, ([0-9.]+) s for the others while the device ran a step; host per step:/\2 img\/s, data wait \3+\4 s; host/'
done
