#!/usr/bin/env bash
# Round 18 (issue #11): where a TF32 step goes, ours (Nsight Compute, profile.sh) beside
# PyTorch's channels-last TF32 step (torch.profiler, peers/pytorch/profile_step.py).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
nvidia-smi -L
timeout 120 python3 peers/pytorch/profile_step.py --mode tf32 --top 30 > "$OUT/torch_tf32.txt" 2>&1
cat "$OUT/torch_tf32.txt"
MODES=tf32 timeout 300 bash xtask/gpu-scripts/profile.sh 2>&1 | tee "$OUT/ours_tf32.txt"
