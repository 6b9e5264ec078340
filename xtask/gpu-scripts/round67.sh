#!/usr/bin/env bash
# Round 67 (issue #7), on the GPU machine's Xeon, no GPU used: U-Net base 32 (the issue's second
# configuration) with round 65's build beside the PyTorch peer, three times at 8 threads and
# twice at 2, plus a per-op host profile at 8 threads.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
echo "== profile base 32, 8 threads"
MAGMA_PROFILE_HOST=1 timeout 150 taskset -c 0-7 gpu-bundle/xtask-tasks bench-unet --device cpu --configs 32:128:8 --threads 8 --iters 6 --warm 2 2>&1 | grep -E '^\| 32|  [a-z]' | tr -s ' ' | cut -d' ' -f2-4 | tr '\n' ';'; echo
run() { # NAME CORES THREADS
  timeout 200 taskset -c "$2" gpu-bundle/xtask-tasks bench-unet --device cpu --configs 32:128:8 --threads "$3" --iters 6 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c; do run b32t8$rep 0-7 8; done
for rep in a b; do run b32t2$rep 0,1 2; done
