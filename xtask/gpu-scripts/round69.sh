#!/usr/bin/env bash
# Round 69 (issue #7), on the GPU machine's Xeon, no GPU used: Winograd blocks of tile rows
# rounded up to whole register tiles of 32 tiles (F(2x2) at 16^2 with 512 channels, F(4x4) at
# 32^2 with 256 and at 64^2 with 128 had blocks of 16 tiles: half of every channel sum idle)
# against round 65's build (gpu-bundle/old/). bench_conv at 8 threads, base 16 and 32, old and
# new alternating; then bench-unet base 32 beside the PyTorch peer, old and new alternating.
source "$(dirname "$0")/lib.sh"
for rep in a b; do
  conv_rows b32old$rep gpu-bundle/old/bench_conv 0-7 8 'enc|dec|mid|total' 2,5,6,7 --base 32
  conv_rows b32new$rep gpu-bundle/bench_conv 0-7 8 'enc|dec|mid|total' 2,5,6,7 --base 32
done
conv_rows b16old gpu-bundle/old/bench_conv 0-7 8 'enc|dec|mid|total' 2,5,6,7 --base 16
conv_rows b16new gpu-bundle/bench_conv 0-7 8 'enc|dec|mid|total' 2,5,6,7 --base 16
for rep in a b; do
  unet_vs_torch b32t8old$rep gpu-bundle/old/xtask-tasks 0-7 8 32:128:8 6
  unet_vs_torch b32t8new$rep gpu-bundle/xtask-tasks 0-7 8 32:128:8 6
done
unet_vs_torch b32t2new gpu-bundle/xtask-tasks 0,1 2 32:128:8 6
