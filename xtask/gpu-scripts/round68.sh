#!/usr/bin/env bash
# Round 68 (issue #7), on the GPU machine's Xeon, no GPU used: the batch-wide im2col filter
# gradient (one image per thread: the 8^2 level and up3 at 8 threads) as one GEMM on the GEMM
# crate's own threads (round 65, gpu-bundle/old/bench_conv) against row blocks of dW^T, two per
# thread, each one serial GEMM with the whole batch as its inner dimension, then the parallel
# transpose (gpu-bundle/bench_conv). Filter gradients at 8 threads, base 16 and 32, alternating;
# then every pass of base 32 layer by layer at 8 threads.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
filt() { # NAME BINARY BASE
  RAYON_NUM_THREADS=8 timeout 100 taskset -c 0-7 "$2" --filter-only --base "$3" > "$OUT/$1.log" 2>&1
  echo "== $1: $(grep -E '^\| (mid|total|up3)' "$OUT/$1.log" | cut -d'|' -f2,7 | tr -s ' ' | tr '\n' ' ')"
}
for rep in a b; do
  filt b16gemm$rep gpu-bundle/old/bench_conv 16
  filt b16rows$rep gpu-bundle/bench_conv 16
  filt b32gemm$rep gpu-bundle/old/bench_conv 32
  filt b32rows$rep gpu-bundle/bench_conv 32
done
echo "== base 32, 8 threads, every pass (layer | fwd | data | filter):"
RAYON_NUM_THREADS=8 timeout 200 taskset -c 0-7 gpu-bundle/bench_conv --base 32 > "$OUT/b32all.log" 2>&1
grep -E '^\| (enc|dec|mid|total|up|head)' "$OUT/b32all.log" | cut -d'|' -f2,5,6,7 | tr -s ' ' | tr '\n' ';'; echo
