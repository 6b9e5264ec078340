#!/usr/bin/env bash
# Round 21 (issue #11): the fused fp32 batch-norm + ReLU backward recomputes the ReLU's mask from x with
# the forward's coefficients instead of reading the ReLU's output (one operand less in both
# backward passes); the first-layer channel padding kept for bf16 only (TF32 got slower kernels).
# All GPU tests; bench-unet fp32/tf32/bf16 beside PyTorch (bf16 also torch.compile) at both
# sizes; the TF32 and bf16 kernel profiles.
source "$(dirname "$0")/common.sh"
timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "\| 64|exit|rror" "$OUT/bench.log" | tail -4
timeout 90 "$bin" bench-unet --device cuda --configs 16:128:32 --modes tf32,bf16 --iters 20 --warm 5 --peer python3 --json "$OUT/bench_small.json" > "$OUT/bench_small.log" 2>&1; echo "exit $?" >> "$OUT/bench_small.log"
grep -E "\| 16|exit|rror" "$OUT/bench_small.log" | tail -3
MODES="tf32 bf16" timeout 200 bash xtask/gpu-scripts/profile.sh > "$OUT/profile.txt" 2>&1
grep -E "exit|total" "$OUT/profile.txt"
grep -E "partial_sums|backward_apply" "$OUT/profile.txt"
