#!/usr/bin/env bash
# Round 23 (issue #11): the review fixes (padded bf16 convolutions keyed by the padded problem,
# quad batch-norm kernels only on 16-byte aligned operands, the saved ReLU mask checked, 1×1 fp32
# filters used as KRSC as they are). All GPU tests; bench-unet tf32/bf16 beside PyTorch.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
timeout 200 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "\| 64|exit|rror|note: .*has no" "$OUT/bench.log" | tail -5
