#!/usr/bin/env bash
# Round 66 (issue #7), on the GPU machine's Xeon, no GPU used: round 65's build (one-GEMM 8^2
# filter gradient, per-channel batch norm) against the round-64 build (gpu-bundle/old/): the
# per-op host profile at 8 threads, old and new alternating twice, then bench-unet beside the
# PyTorch peer, old and new alternating, three times at 8 threads and twice at 2.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
prof() { # NAME BINARY
  echo "== profile $1"
  MAGMA_PROFILE_HOST=1 timeout 100 taskset -c 0-7 "$2" bench-unet --device cpu --configs 16:128:8 --threads 8 --iters 8 --warm 2 2>&1 | grep -E '^\| 16|  (conv|batch|max|concat)' | tr -s ' ' | cut -d' ' -f2-4 | tr '\n' ';'; echo
}
for rep in a b; do
  prof old$rep gpu-bundle/old/xtask-tasks
  prof new$rep gpu-bundle/xtask-tasks
done
run() { # NAME BINARY CORES THREADS
  timeout 150 taskset -c "$3" "$2" bench-unet --device cpu --configs 16:128:8 --threads "$4" --iters 8 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c; do
  run t8old$rep gpu-bundle/old/xtask-tasks 0-7 8
  run t8new$rep gpu-bundle/xtask-tasks 0-7 8
done
for rep in a b; do
  run t2old$rep gpu-bundle/old/xtask-tasks 0,1 2
  run t2new$rep gpu-bundle/xtask-tasks 0,1 2
done
