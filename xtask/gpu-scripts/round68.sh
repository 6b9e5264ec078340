#!/usr/bin/env bash
# Round 68 (issue #7), on the GPU machine's Xeon, no GPU used: the batch-wide im2col filter
# gradient (one image per thread: the 8^2 level and up3 at 8 threads) as one GEMM on the GEMM
# crate's own threads (round 65, gpu-bundle/old/bench_conv) against row blocks of dW^T, two per
# thread, each one serial GEMM with the whole batch as its inner dimension, then the parallel
# transpose (gpu-bundle/bench_conv). Filter gradients at 8 threads, base 16 and 32, alternating;
# then every pass of base 32 layer by layer at 8 threads.
source "$(dirname "$0")/lib.sh"
for rep in a b; do
  conv_rows b16gemm$rep gpu-bundle/old/bench_conv 0-7 8 'mid|total' 2,7 --filter-only --base 16
  conv_rows b16rows$rep gpu-bundle/bench_conv 0-7 8 'mid|total' 2,7 --filter-only --base 16
  conv_rows b32gemm$rep gpu-bundle/old/bench_conv 0-7 8 'mid|total' 2,7 --filter-only --base 32
  conv_rows b32rows$rep gpu-bundle/bench_conv 0-7 8 'mid|total' 2,7 --filter-only --base 32
done
# Every pass of base 32 (layer | fwd | data | filter).
conv_rows b32all gpu-bundle/bench_conv 0-7 8 'enc|dec|mid|total|up|head' 2,5,6,7 --base 32
