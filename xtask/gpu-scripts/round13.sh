#!/usr/bin/env bash
# Round 13 (issue #11): bf16 filters converted once per forward pass (ConvOps::conv_weight),
# channel-pair batch-norm partial sums, channel-pair bf16 bias; peak memory as PyTorch counts it
# (requests rounded to 512 B). The GPU tests, the bf16 bench beside PyTorch eager, the kernel
# profile of one bf16 step.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi -L
(cd gpu-bundle && timeout 200 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh: (PASS|FAIL|[0-9])|FAILED|panicked' "$OUT/tests.log" | tail -10
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
timeout 120 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 --peer python3 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
grep -E "note|\| 64|exit" "$OUT/bench.log" | tail -4
grep -o '"peak_reserved_gib":[0-9.]*' "$OUT/bench.json"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 150 "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
  --csv --print-units base "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 \
  --iters 1 --warm 3 --profile-steps > "$OUT/ncu_bf16.csv" 2> "$OUT/ncu_bf16.err"; echo "ncu exit $?"
