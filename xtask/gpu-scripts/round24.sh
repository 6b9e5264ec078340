#!/usr/bin/env bash
# Round 24 (issue #11): the clean-up after re-reading the change (one layout conversion each way
# with the channel padding as a parameter, the bf16/fp32 launcher pairs declared and picked by
# one macro, one backend constructor for the deterministic switch); behaviour unchanged. All GPU
# tests; bench-unet fp32/tf32/bf16 beside PyTorch.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
timeout 200 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "\| 64|exit|rror|note: .*has no" "$OUT/bench.log" | tail -5
