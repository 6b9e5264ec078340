#!/usr/bin/env bash
# Round 17 (issue #11): fp32 NHWC activations for TF32 (the bf16 path's NHWC kernels in fp32:
# batch norm + ReLU, ReLU, max-pool, concat / split, sums, bias; filters KRSC once per pass) and
# the fastest convolution algorithms by default (PyTorch's default; `--deterministic` on both
# sides for the like-for-like deterministic comparison). All GPU tests; bench-unet
# fp32/tf32/bf16 beside PyTorch (bf16 also torch.compile); fp32/tf32 again with --deterministic.
source "$(dirname "$0")/common.sh"
timeout 300 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench_fast.json" > "$OUT/bench_fast.log" 2>&1; echo "exit $?" >> "$OUT/bench_fast.log"
grep -E "note|\| 64|exit|rror" "$OUT/bench_fast.log" | tail -9
timeout 180 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32 --iters 20 --warm 5 --peer python3 --deterministic --json "$OUT/bench_det.json" > "$OUT/bench_det.log" 2>&1; echo "exit $?" >> "$OUT/bench_det.log"
grep -E "\| 64|exit|rror" "$OUT/bench_det.log" | tail -4
timeout 90 "$bin" bench-unet --device cuda --configs 16:128:32 --modes tf32,bf16 --iters 20 --warm 5 --peer python3 --json "$OUT/bench_small.json" > "$OUT/bench_small.log" 2>&1; echo "exit $?" >> "$OUT/bench_small.log"
grep -E "\| 16|exit|rror" "$OUT/bench_small.log" | tail -3
grep -ho '"side":"[a-z-]*"\|"mode":"[a-z0-9]*"\|"peak_gib":[0-9.]*' "$OUT"/bench_fast.json | paste - - - | head -8
