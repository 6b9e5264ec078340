#!/usr/bin/env bash
# Round 32 (issue #11), on the H100: sums and channel biases of activations one 16-byte vector a
# thread, the bias gradient folded by a warp per channel. Before that (round 31): the first layer's
# filter gradient on our kernel for fp32 activations only; bf16 keeps cuDNN's on the padded
# input). All GPU tests; bench-unet fp32/tf32/bf16 beside PyTorch eager and torch.compile (bf16),
# twice; the small configuration (base 16, 128², batch 32) in tf32 and bf16.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
for run in a b; do bench_vs_peer bench_$run --peer-compile bf16; done
timeout 150 "$bin" bench-unet --device cuda --configs 16:128:32 --modes tf32,bf16 --iters 30 --warm 5 --peer python3 --json "$OUT/bench_small.json" > "$OUT/bench_small.log" 2>&1; echo "exit $?" >> "$OUT/bench_small.log"
grep -E "\| 16|exit|rror" "$OUT/bench_small.log" | tail -4
