#!/usr/bin/env bash
# Round 42 (issue #11), on the H100: the label check of the CUDA losses tests class indices with
# an integer conversion instead of `f32::fract` (a libm call on baseline x86-64: 4.4 ms of the
# host's ≈ 12.5 ms a bf16 step in round 41's host profile). All GPU tests; bench-unet in every
# mode beside the PyTorch peer (eager, and torch.compile in bf16) with the host profile once;
# train-unet from gpu-data/pets128.h5 (as in rounds 39-41) in bf16, TF32 and fp32, 8 epochs.
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | grep -v " 0 passed" | head -24
bench_vs_peer bench --peer-compile bf16
grep -E "note:" "$OUT/bench.log" | tail -3
MAGMA_PROFILE_HOST=1 timeout 120 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 > "$OUT/bench-host.log" 2>&1
echo "host-profile bench exit $?"; grep -E "note:|forward|backward" "$OUT/bench-host.log" | head -6
common="--device cuda --data gpu-data/pets128.h5 --split trainval --val-split test --size 256 --base 64 --depth 4 --batch 16 --epochs 8 --augment hflip --loss ce --quiet --workers 8"
for mode in bf16 tf32 fp32; do
  timeout 150 "$bin" train-unet $common --precision $mode --out "runs/data-$mode" > "$OUT/train-$mode.log" 2>&1
  echo "== $mode: exit $?"
  grep -E "training:" "$OUT/train-$mode.log" | tail -12 | sed -E 's/images in ([0-9.]+) s = ([0-9.]+) images\/s; waited for data ([0-9.]+) s for the first batch, ([0-9.]+) s for the others while the device ran a step; host per step:/\2 img\/s, data wait \3+\4 s; host/'
done
