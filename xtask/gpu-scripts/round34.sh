#!/usr/bin/env bash
# (Measured and reverted: the narrow kernels were no faster than the gathers, 407 vs 373 µs a bf16 step.)
# Round 34 (issue #11), on the H100: filters of 32+ channels converted NCHW <-> KRSC through
# narrow shared-memory tiles instead of the elementwise gather. All GPU tests; bench-unet
# fp32/tf32/bf16 beside PyTorch eager and torch.compile (bf16); the kernels of one step.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "\| 64|exit|rror|note: .*has no" "$OUT/bench.log" | tail -5
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for mode in tf32 bf16; do
  timeout 100 "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
    --csv --print-units base "$bin" bench-unet --device cuda --configs 64:256:16 --modes $mode \
    --iters 1 --warm 3 --profile-steps > "$OUT/seq_$mode.csv" 2> "$OUT/seq_$mode.err"
  echo "== $mode ncu exit $?"
done
