#!/usr/bin/env bash
# Round 71 (issue #7), on the GPU machine's Xeon, no GPU used: the thirteenth session's final
# build (round 69's code) beside the PyTorch peer on the same pinned cores, the pairs
# interleaved: U-Net base 16 four times at 8 and at 2 threads, base 32 twice at 8 threads and
# once at 2.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
run() { # NAME CONFIG CORES THREADS ITERS
  timeout 200 taskset -c "$3" gpu-bundle/xtask-tasks bench-unet --device cpu --configs "$2" --threads "$4" --iters "$5" --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c d; do
  run b16t8$rep 16:128:8 0-7 8 8
  run b16t2$rep 16:128:8 0,1 2 8
done
for rep in a b; do run b32t8$rep 32:128:8 0-7 8 6; done
run b32t2a 32:128:8 0,1 2 6
