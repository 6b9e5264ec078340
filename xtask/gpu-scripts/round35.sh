#!/usr/bin/env bash
# Round 35 (issue #11), on the H100: after a review of rounds 25-34 — the 1×1 head kernel writes
# an NHWC activation of the mode's type like every convolution (no longer NCHW fp32), the
# few-channel kernels checked against their grid limits before they are chosen, the bf16
# batch-norm backward's 16-byte path only on aligned operands, tests with the filters as the
# models pass them (KRSC) and the uncovered branches. All GPU tests; bench-unet fp32/tf32/bf16
# beside PyTorch eager and torch.compile (bf16), twice.
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | head -20
for run in a b; do bench_vs_peer bench_$run --peer-compile bf16; done
