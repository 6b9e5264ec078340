#!/usr/bin/env bash
# Round 38 (issue #11), on the H100: the clean-up after re-reading the change (16-byte channel
# vectors, 16-byte alignment checks and the warp folds shared from act.cuh / common.cuh, one
# lane fold for both 1×1 filter-gradient kernels, the few-channel filter gradient beside the
# ordinary data gradient in conv2d_backward); behaviour unchanged. All GPU tests; one bench-unet
# beside PyTorch eager and torch.compile (bf16).
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | head -20
bench_vs_peer bench --peer-compile bf16
