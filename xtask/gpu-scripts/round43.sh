#!/usr/bin/env bash
# Round 43 (issue #11), on the H100: the issue's second data point, U-Net base 64 at 128×128,
# batch 32, beside the PyTorch peer (eager in every mode, torch.compile in bf16), with the build of
# round 42. No tests (round 42 ran them on this build).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi -L
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
timeout 400 "$bin" bench-unet --device cuda --configs 64:128:32 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 --peer-compile bf16 --json "$OUT/bench128.json" > "$OUT/bench128.log" 2>&1
echo "exit $?"
grep -E "\| 64|note:|rror" "$OUT/bench128.log" | tail -8
