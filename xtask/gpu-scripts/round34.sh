#!/usr/bin/env bash
# (Measured and reverted: the narrow kernels were no faster than the gathers, 407 vs 373 µs a bf16 step.)
# Round 34 (issue #11), on the H100: filters of 32+ channels converted NCHW <-> KRSC through
# narrow shared-memory tiles instead of the elementwise gather. All GPU tests; bench-unet
# fp32/tf32/bf16 beside PyTorch eager and torch.compile (bf16); the kernels of one step.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
bench_vs_peer bench --peer-compile bf16
kernel_sequence tf32 bf16
