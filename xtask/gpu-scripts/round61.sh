#!/usr/bin/env bash
# Round 61 (issue #7), on the GPU machine's Xeon, no GPU used: the batch-wide Winograd filter
# gradient for small images (F(4x4) at 32^2, F(2x2) at 16^2: every image's transforms at once,
# then the sums split by frequency instead of by image). Filter gradients layer by layer, the
# round-60 build (gpu-bundle/old/bench_conv_r60) and this one alternating, twice at 2 and 8
# threads; this build's full table once at 2 and 8; bench-unet beside the PyTorch peer, the
# round-58 build (gpu-bundle/old/xtask-tasks) and this one alternating, three times at 2 and 8
# threads; the per-op host profile of this build at 2 and 8 threads.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
lscpu | grep -E "Model name|^CPU\(s\)"
filt() { # NAME BINARY CORES THREADS
  RAYON_NUM_THREADS=$4 timeout 60 taskset -c "$3" "$2" --filter-only > "$OUT/$1.log" 2>&1
  echo "== $1: $(grep -E '^\| (enc|dec|mid|total)' "$OUT/$1.log" | cut -d'|' -f2,7 | tr -s ' ' | tr '\n' ' ')"
}
for rep in a b; do
  filt f2r60$rep gpu-bundle/old/bench_conv_r60 0,1 2
  filt f2new$rep gpu-bundle/bench_conv 0,1 2
  filt f8r60$rep gpu-bundle/old/bench_conv_r60 0-7 8
  filt f8new$rep gpu-bundle/bench_conv 0-7 8
done
conv() { # NAME CORES THREADS
  RAYON_NUM_THREADS=$3 timeout 100 taskset -c "$2" gpu-bundle/bench_conv > "$OUT/$1.log" 2>&1
  echo "== $1:"; grep -E '^\| (enc|dec|mid|total|up|head)' "$OUT/$1.log" | cut -d'|' -f2,5,6,7 | tr -s ' ' | tr '\n' ';'; echo
}
conv conv2new 0,1 2
conv conv8new 0-7 8
run() { # NAME BINARY CORES THREADS
  timeout 150 taskset -c "$3" "$2" bench-unet --device cpu --configs 16:128:8 --threads "$4" --iters 8 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c; do
  run t2old$rep gpu-bundle/old/xtask-tasks 0,1 2
  run t2new$rep gpu-bundle/xtask-tasks 0,1 2
  run t8old$rep gpu-bundle/old/xtask-tasks 0-7 8
  run t8new$rep gpu-bundle/xtask-tasks 0-7 8
done
for t in "2 0,1" "8 0-7"; do
  set -- $t
  MAGMA_PROFILE_HOST=1 timeout 120 taskset -c $2 gpu-bundle/xtask-tasks bench-unet --device cpu --configs 16:128:8 --threads $1 --iters 4 --warm 2 > "$OUT/prof$1.log" 2>&1
  echo "== prof$1"; grep -E "^  [a-z_0-9]+ +(forward|backward)|^note" "$OUT/prof$1.log"
done
