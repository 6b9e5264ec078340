#!/usr/bin/env bash
# Round 36 (issue #11), on the H100: round 35's code with the pointwise test fixed for K = 1 (a
# one-channel tensor reports the plain layout: NCHW and NHWC coincide). All GPU tests; one
# bench-unet beside PyTorch eager and torch.compile (bf16).
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | head -20
timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "\| 64|exit|rror|note: .*has no" "$OUT/bench.log" | tail -5
