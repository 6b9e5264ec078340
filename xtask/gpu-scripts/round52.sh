#!/usr/bin/env bash
# Round 52 (issue #7), on the GPU machine's Xeon, no GPU used: the final build (as round 51)
# beside the PyTorch peer on the same pinned cores, alternating: base 16 with 10 timed steps twice
# at 2 and twice at 8 threads, then base 32 (the issue's second figure) twice at 2 and 8 threads.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|L2|L3"
cpu() { # NAME CORES THREADS CONFIGS ITERS
  timeout 200 taskset -c "$2" "$bin" bench-unet --device cpu --configs "$4" --threads "$3" --iters "$5" --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b; do
  cpu b16t2$rep 0,1 2 16:128:8 10
  cpu b16t8$rep 0-7 8 16:128:8 10
done
for rep in a b; do
  cpu b32t2$rep 0,1 2 32:128:8 4
  cpu b32t8$rep 0-7 8 32:128:8 6
done
