#!/usr/bin/env bash
# Round 62 (issue #7), on the GPU machine's Xeon, no GPU used: the session's final build (round
# 61's code less the per-image path's whole-image blocks, which no U-Net layer used) against the
# round-58 build (gpu-bundle/old/): the convolutions' table once at 2 and 8 threads, then
# bench-unet beside the PyTorch peer on the same pinned cores, old and new alternating, four
# times at 2 and 8 threads (medians over pairs: single ratios vary by ±30 % between instances).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
lscpu | grep -E "Model name|^CPU\(s\)"
conv() { # NAME CORES THREADS
  RAYON_NUM_THREADS=$3 timeout 100 taskset -c "$2" gpu-bundle/bench_conv > "$OUT/$1.log" 2>&1
  echo "== $1:"; grep -E '^\| (enc|dec|mid|total|up|head)' "$OUT/$1.log" | cut -d'|' -f2,5,6,7 | tr -s ' ' | tr '\n' ';'; echo
}
conv conv2 0,1 2
conv conv8 0-7 8
run() { # NAME BINARY CORES THREADS
  timeout 150 taskset -c "$3" "$2" bench-unet --device cpu --configs 16:128:8 --threads "$4" --iters 8 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c d; do
  run t2old$rep gpu-bundle/old/xtask-tasks 0,1 2
  run t2new$rep gpu-bundle/xtask-tasks 0,1 2
  run t8old$rep gpu-bundle/old/xtask-tasks 0-7 8
  run t8new$rep gpu-bundle/xtask-tasks 0-7 8
done
