#!/usr/bin/env bash
# (The experiment's switch, MAGMA_EXP_*, was removed after the round: the scripts keep the record.)
# Round 26 (issue #11): pointwise kernels for the 1x1 head (K <= 8), bf16 batch-norm backward
# eight channels per access with its coefficients in registers and the ReLU mask recomputed.
# All GPU tests; bench-unet tf32/bf16 beside PyTorch; bf16 reading the ReLU output instead
# (MAGMA_EXP_BF16_MASK=0, an experiment); the kernels of one step in launch order.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
timeout 200 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "\| 64|exit|rror|note: .*has no" "$OUT/bench.log" | tail -6
MAGMA_EXP_BF16_MASK=0 timeout 100 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 > "$OUT/bench_nomask.log" 2>&1
grep -E "\| 64" "$OUT/bench_nomask.log" | tail -2
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for mode in tf32 bf16; do
  timeout 150 "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
    --csv --print-units base "$bin" bench-unet --device cuda --configs 64:256:16 --modes $mode \
    --iters 1 --warm 3 --profile-steps > "$OUT/seq_$mode.csv" 2> "$OUT/seq_$mode.err"
  echo "== $mode ncu exit $?"
done
