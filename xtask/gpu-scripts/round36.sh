#!/usr/bin/env bash
# Round 36 (issue #11), on the H100: round 35's code with the pointwise test fixed for K = 1 (a
# one-channel tensor reports the plain layout: NCHW and NHWC coincide). All GPU tests; one
# bench-unet beside PyTorch eager and torch.compile (bf16).
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | head -20
bench_vs_peer bench --peer-compile bf16
