#!/usr/bin/env bash
# Round 64 (issue #7), on the GPU machine's Xeon, no GPU used: reuse of freed tensor buffers for
# outputs written in full (magma_tensor::host_buffer_pool; MAGMA_HOST_POOL_MIB=0 turns it off in
# the same binary, which then zeroes every output as before). The CPU topology first (which of
# cores 0-7 share a physical core), then bench-unet with the pool off / on alternating beside
# the PyTorch peer at 2 and 8 threads, then a per-op host profile at 8 threads, pool off and on.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|L2|L3"
for c in 0 1 2 3 4 5 6 7; do echo -n "cpu$c siblings $(cat /sys/devices/system/cpu/cpu$c/topology/thread_siblings_list); "; done; echo
run() { # NAME POOL_MIB CORES THREADS
  MAGMA_HOST_POOL_MIB=$2 timeout 150 taskset -c "$3" gpu-bundle/xtask-tasks bench-unet --device cpu --configs 16:128:8 --threads "$4" --iters 8 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c; do
  run t2off$rep 0 0,1 2
  run t2on$rep 512 0,1 2
  run t8off$rep 0 0-7 8
  run t8on$rep 512 0-7 8
done
for pool in 0 512; do
  echo "== profile 8 threads pool $pool"
  MAGMA_PROFILE_HOST=1 MAGMA_HOST_POOL_MIB=$pool timeout 100 taskset -c 0-7 gpu-bundle/xtask-tasks bench-unet --device cpu --configs 16:128:8 --threads 8 --iters 8 --warm 2 2>&1 | grep -E '^\| 16|  [a-z]|queuing'
done
