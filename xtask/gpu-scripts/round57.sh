#!/usr/bin/env bash
# Round 57 (issue #7), on the GPU machine's Xeon, no GPU used: the round-56 build again (no CPU
# code changed since), more repetitions to settle the ratio's spread: bench-unet beside the
# PyTorch peer on the same pinned cores, alternating 2 and 8 threads, five times each, then base
# 32 once at each thread count.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|L2|L3"
run() { # NAME CORES THREADS CONFIG ITERS
  timeout 200 taskset -c "$2" "$bin" bench-unet --device cpu --configs "$4" --threads "$3" --iters "$5" --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c d e; do
  run t2$rep 0,1 2 16:128:8 8
  run t8$rep 0-7 8 16:128:8 8
done
run b32t2 0,1 2 32:128:8 4
run b32t8 0-7 8 32:128:8 6
