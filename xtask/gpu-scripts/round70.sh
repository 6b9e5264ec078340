#!/usr/bin/env bash
# Round 70 (issue #7), on the GPU machine's Xeon, no GPU used: the data gradient of stride-1
# convolutions that neither Winograd nor the direct kernel take (the 8^2 level) as the forward
# im2col of the output gradient with flipped filters, instead of GEMM into columns + col2im;
# against round 69's build (gpu-bundle/old/). bench_conv at 8 threads, base 32 and 16, old and
# new; then bench-unet base 16 beside the PyTorch peer, old and new alternating, three times at
# 8 threads and twice at 2.
source "$(dirname "$0")/lib.sh"
conv_rows b32old gpu-bundle/old/bench_conv 0-7 8 'mid|total' 2,5,6,7 --base 32
conv_rows b32new gpu-bundle/bench_conv 0-7 8 'mid|total' 2,5,6,7 --base 32
conv_rows b16old gpu-bundle/old/bench_conv 0-7 8 'mid|total' 2,5,6,7 --base 16
conv_rows b16new gpu-bundle/bench_conv 0-7 8 'mid|total' 2,5,6,7 --base 16
old_new_pairs 3 2
