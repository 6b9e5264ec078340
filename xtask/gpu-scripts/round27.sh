#!/usr/bin/env bash
# (The experiment's switch, MAGMA_EXP_*, was removed after the round: the script keeps the record.)
# Round 27 (issue #11): the pointwise kernels with 16-byte loads and a warp fold; the bf16 batch-norm backward on a bounded grid (coefficients kept in registers), two groups in flight; batch-norm reductions in 128-row chunks. As round 26:

# All GPU tests; bench-unet tf32/bf16 beside PyTorch; bf16 reading the ReLU output instead
# (MAGMA_EXP_BF16_MASK=0, an experiment); the kernels of one step in launch order.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
bench_vs_peer bench
MAGMA_EXP_BF16_MASK=0 timeout 100 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 > "$OUT/bench_nomask.log" 2>&1
grep -E "\| 64" "$OUT/bench_nomask.log" | tail -2
kernel_sequence tf32 bf16
