#!/usr/bin/env bash
# Round 33 (issue #11), on the H100: max-pool forward and backward of activations one 16-byte
# vector of channels a thread (after round 32's sums and channel biases). All GPU tests;
# bench-unet fp32/tf32/bf16 beside PyTorch eager and torch.compile (bf16), twice.
source "$(dirname "$0")/common.sh"
grep -hE "test result" "$OUT/tests.log"
for run in a b; do bench_vs_peer bench_$run --peer-compile bf16; done
