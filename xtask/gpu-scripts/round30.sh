#!/usr/bin/env bash
# Round 30 (issue #11): the first-layer filter gradient with up to four column lanes per
# (channel group, input channel, kernel row), on the H100. As round 28: all GPU tests;
# bench-unet
# fp32/tf32/bf16 beside PyTorch eager and torch.compile (bf16); the kernels of one step.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
bench_vs_peer bench --peer-compile bf16
kernel_sequence tf32 bf16
