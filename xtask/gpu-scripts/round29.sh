#!/usr/bin/env bash
# Round 29 (issue #11): the first-layer kernels reworked (forward: 4 output rows a block, the
# filters staged without bank conflicts; filter gradient: the gradient tile and input rows staged
# in shared memory). As round 28: all GPU tests; bench-unet
# fp32/tf32/bf16 beside PyTorch eager and torch.compile (bf16); the kernels of one step.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
bench_vs_peer bench --peer-compile bf16
kernel_sequence tf32 bf16
