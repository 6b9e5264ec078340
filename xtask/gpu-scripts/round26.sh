#!/usr/bin/env bash
# (The experiment's switch, MAGMA_EXP_*, was removed after the round: the script keeps the record.)
# Round 26 (issue #11): pointwise kernels for the 1x1 head (K <= 8), bf16 batch-norm backward
# eight channels per access with its coefficients in registers and the ReLU mask recomputed.
# All GPU tests; bench-unet tf32/bf16 beside PyTorch; bf16 reading the ReLU output instead
# (MAGMA_EXP_BF16_MASK=0, an experiment); the kernels of one step in launch order.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
bench_vs_peer bench
MAGMA_EXP_BF16_MASK=0 timeout 100 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 > "$OUT/bench_nomask.log" 2>&1
grep -E "\| 64" "$OUT/bench_nomask.log" | tail -2
kernel_sequence tf32 bf16
