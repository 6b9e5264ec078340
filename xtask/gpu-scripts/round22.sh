#!/usr/bin/env bash
# Round 22 (issue #11), the session's closing measurement: the ReLU mask recomputed from x in fp32
# only (bf16 reads the ReLU's output again, faster there). All GPU tests; bench-unet
# fp32/tf32/bf16 beside PyTorch (bf16 also torch.compile); fp32 again with --deterministic on
# both sides.
source "$(dirname "$0")/common.sh"
grep -hE "chain .*relative error" "$OUT/tests.log" | head -24
timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "\| 64|exit|rror" "$OUT/bench.log" | tail -4
timeout 120 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32 --iters 20 --warm 5 --peer python3 --deterministic --json "$OUT/bench_det.json" > "$OUT/bench_det.log" 2>&1; echo "exit $?" >> "$OUT/bench_det.log"
grep -E "\| 64|exit|rror" "$OUT/bench_det.log" | tail -2
