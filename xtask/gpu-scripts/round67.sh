#!/usr/bin/env bash
# Round 67 (issue #7), on the GPU machine's Xeon, no GPU used: U-Net base 32 (the issue's second
# configuration) with round 65's build beside the PyTorch peer, three times at 8 threads and
# twice at 2, plus a per-op host profile at 8 threads.
source "$(dirname "$0")/lib.sh"
echo "== profile base 32, 8 threads"
MAGMA_PROFILE_HOST=1 timeout 150 taskset -c 0-7 gpu-bundle/xtask-tasks bench-unet --device cpu --configs 32:128:8 --threads 8 --iters 6 --warm 2 2>&1 | grep -E '^\| 32|  [a-z]' | tr -s ' ' | cut -d' ' -f2-4 | tr '\n' ';'; echo
for rep in a b c; do unet_vs_torch b32t8$rep gpu-bundle/xtask-tasks 0-7 8 32:128:8 6; done
for rep in a b; do unet_vs_torch b32t2$rep gpu-bundle/xtask-tasks 0,1 2 32:128:8 6; done
