#!/usr/bin/env bash
# Round 20 (issue #11): the few-channel first convolution zero-padded to the tensor cores'
# alignment (3 -> 4 fp32 / 8 bf16 channels), 32-bit index arithmetic in the layout gathers (the
# filters' conversions were compute-bound on 64-bit division), batch-norm statistics back to 4
# rows in flight. All GPU tests; bench-unet fp32/tf32/bf16 beside PyTorch (bf16 also
# torch.compile); the TF32 and bf16 kernel profiles.
source "$(dirname "$0")/common.sh"
timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "\| 64|exit|rror" "$OUT/bench.log" | tail -4
MODES="tf32 bf16" timeout 200 bash xtask/gpu-scripts/profile.sh > "$OUT/profile.txt" 2>&1
grep -E "exit|total" "$OUT/profile.txt"
grep -E "exit|total|ms" "$OUT/profile.txt" | head -30
