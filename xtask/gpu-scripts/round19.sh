#!/usr/bin/env bash
# Round 19 (issue #11): layout conversions of filters and few-channel images as elementwise
# gathers (the tiled transpose left most of its tiles empty: 245 GB/s on a 3×3 filter), fp32
# batch-norm apply and backward apply four channels per 16-byte access, the statistics' partial
# sums with eight rows in flight. All GPU tests; bench-unet tf32/bf16 beside PyTorch; the TF32 and
# bf16 kernel profiles.
source "$(dirname "$0")/common.sh"
timeout 200 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "\| 64|exit|rror" "$OUT/bench.log" | tail -4
MODES="tf32 bf16" timeout 200 bash xtask/gpu-scripts/profile.sh > "$OUT/profile.txt" 2>&1
grep -E "exit|total|ms" "$OUT/profile.txt" | head -40
