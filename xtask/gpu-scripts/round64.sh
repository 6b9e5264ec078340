#!/usr/bin/env bash
# Round 64 (issue #7), on the GPU machine's Xeon, no GPU used: reuse of freed tensor buffers for
# outputs written in full (magma_tensor::host_buffer_pool; MAGMA_HOST_POOL_MIB=0 turns it off in
# the same binary, which then zeroes every output as before). The CPU topology first (which of
# cores 0-7 share a physical core), then bench-unet with the pool off / on alternating beside
# the PyTorch peer at 2 and 8 threads, then a per-op host profile at 8 threads, pool off and on.
source "$(dirname "$0")/lib.sh"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|L2|L3"
for c in 0 1 2 3 4 5 6 7; do echo -n "cpu$c siblings $(cat /sys/devices/system/cpu/cpu$c/topology/thread_siblings_list); "; done; echo
for rep in a b c; do
  MAGMA_HOST_POOL_MIB=0 unet_vs_torch t2off$rep gpu-bundle/xtask-tasks 0,1 2
  MAGMA_HOST_POOL_MIB=512 unet_vs_torch t2on$rep gpu-bundle/xtask-tasks 0,1 2
  MAGMA_HOST_POOL_MIB=0 unet_vs_torch t8off$rep gpu-bundle/xtask-tasks 0-7 8
  MAGMA_HOST_POOL_MIB=512 unet_vs_torch t8on$rep gpu-bundle/xtask-tasks 0-7 8
done
for pool in 0 512; do
  echo "== profile 8 threads pool $pool"
  MAGMA_PROFILE_HOST=1 MAGMA_HOST_POOL_MIB=$pool timeout 100 taskset -c 0-7 gpu-bundle/xtask-tasks bench-unet --device cpu --configs 16:128:8 --threads 8 --iters 8 --warm 2 2>&1 | grep -E '^\| 16|  [a-z]|queuing'
done
