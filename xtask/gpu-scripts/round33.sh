#!/usr/bin/env bash
# Round 33 (issue #11), on the H100: max-pool forward and backward of activations one 16-byte
# vector of channels a thread (after round 32's sums and channel biases). All GPU tests;
# bench-unet fp32/tf32/bf16 beside PyTorch eager and torch.compile (bf16), twice.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
for run in a b; do
  timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench_$run.json" > "$OUT/bench_$run.log" 2>&1; echo "exit $?" >> "$OUT/bench_$run.log"
  grep -E "\| 64|exit|rror|note: .*has no" "$OUT/bench_$run.log" | tail -5
done
