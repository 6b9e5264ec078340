#!/usr/bin/env bash
# Round 66 (issue #7), on the GPU machine's Xeon, no GPU used: round 65's build (one-GEMM 8^2
# filter gradient, per-channel batch norm) against the round-64 build (gpu-bundle/old/): the
# per-op host profile at 8 threads, old and new alternating twice, then bench-unet beside the
# PyTorch peer, old and new alternating, three times at 8 threads and twice at 2.
source "$(dirname "$0")/lib.sh"
prof() { # NAME BINARY
  echo "== profile $1"
  MAGMA_PROFILE_HOST=1 timeout 100 taskset -c 0-7 "$2" bench-unet --device cpu --configs 16:128:8 --threads 8 --iters 8 --warm 2 2>&1 | grep -E '^\| 16|  (conv|batch|max|concat)' | tr -s ' ' | cut -d' ' -f2-4 | tr '\n' ';'; echo
}
for rep in a b; do
  prof old$rep gpu-bundle/old/xtask-tasks
  prof new$rep gpu-bundle/xtask-tasks
done
old_new_pairs 3 2
