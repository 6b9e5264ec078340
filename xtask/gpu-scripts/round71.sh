#!/usr/bin/env bash
# Round 71 (issue #7), on the GPU machine's Xeon, no GPU used: the thirteenth session's final
# build (round 69's code) beside the PyTorch peer on the same pinned cores, the pairs
# interleaved: U-Net base 16 four times at 8 and at 2 threads, base 32 twice at 8 threads and
# once at 2.
source "$(dirname "$0")/lib.sh"
for rep in a b c d; do
  unet_vs_torch b16t8$rep gpu-bundle/xtask-tasks 0-7 8
  unet_vs_torch b16t2$rep gpu-bundle/xtask-tasks 0,1 2
done
for rep in a b; do unet_vs_torch b32t8$rep gpu-bundle/xtask-tasks 0-7 8 32:128:8 6; done
unet_vs_torch b32t2a gpu-bundle/xtask-tasks 0,1 2 32:128:8 6
