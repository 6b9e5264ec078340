#!/usr/bin/env bash
# Round 65 (issue #7), on the GPU machine's Xeon, no GPU used: the im2col filter gradient with
# one image per thread (the 8^2 level at 8 threads, and up3's) as one GEMM over the whole batch
# (filter_gemm_over_batch) instead of per-image GEMMs with a 64-long inner dimension added row
# block by row block, and the per-group path's dW^T -> dW transpose on the rayon pool. The
# round-64 build (host buffer pool) is carried as gpu-bundle/old/. bench_conv at 8 and 2 threads,
# old and new alternating; then bench-unet beside the PyTorch peer, old and new alternating.
source "$(dirname "$0")/lib.sh"
conv_rows c8old gpu-bundle/old/bench_conv 0-7 8 'enc|dec|mid|total|up|head' 2,5,6,7
conv_rows c8new gpu-bundle/bench_conv 0-7 8 'enc|dec|mid|total|up|head' 2,5,6,7
conv_rows c8old2 gpu-bundle/old/bench_conv 0-7 8 'enc|dec|mid|total|up|head' 2,5,6,7
conv_rows c8new2 gpu-bundle/bench_conv 0-7 8 'enc|dec|mid|total|up|head' 2,5,6,7
conv_rows c2old gpu-bundle/old/bench_conv 0,1 2 'enc|dec|mid|total|up|head' 2,5,6,7
conv_rows c2new gpu-bundle/bench_conv 0,1 2 'enc|dec|mid|total|up|head' 2,5,6,7
old_new_pairs 3 2
