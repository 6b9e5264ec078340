#!/usr/bin/env bash
# Round 35 (issue #11), on the H100: after a review of rounds 25-34 — the 1×1 head kernel writes
# an NHWC activation of the mode's type like every convolution (no longer NCHW fp32), the
# few-channel kernels checked against their grid limits before they are chosen, the bf16
# batch-norm backward's 16-byte path only on aligned operands, tests with the filters as the
# models pass them (KRSC) and the uncovered branches. All GPU tests; bench-unet fp32/tf32/bf16
# beside PyTorch eager and torch.compile (bf16), twice.
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | head -20
for run in a b; do
  timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench_$run.json" > "$OUT/bench_$run.log" 2>&1; echo "exit $?" >> "$OUT/bench_$run.log"
  grep -E "\| 64|exit|rror|note: .*has no" "$OUT/bench_$run.log" | tail -5
done
