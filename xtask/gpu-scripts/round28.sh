#!/usr/bin/env bash
# Round 28 (issue #11): the first layer (3x3 convolution of the 3-channel image) on its own
# kernels (forward from the NCHW image to the NHWC activation, filter gradient from the NHWC
# output gradient); the ReLU mask recomputed in bf16 too. All GPU tests; bench-unet
# fp32/tf32/bf16 beside PyTorch eager and torch.compile (bf16); the kernels of one step.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
bench_vs_peer bench --peer-compile bf16
kernel_sequence tf32 bf16
