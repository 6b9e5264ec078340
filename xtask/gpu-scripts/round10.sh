#!/usr/bin/env bash
# Round 10 (issues #11 and #10), on a 2-GPU machine: where the host spends each bf16 step (the
# bench's host-phase note), the 2-GPU bf16 run with the same note for rank 0, and the kernel-time
# profile of one bf16 step (ncu).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
export NCCL_NVLS_ENABLE=0
nvidia-smi -L
timeout 100 "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 --iters 20 --warm 5 > "$OUT/bench_bf16.log" 2>&1
grep -E "note|bf16" "$OUT/bench_bf16.log" | tail -3
MOUT=/tmp/multi; mkdir -p $MOUT
OUT=$MOUT MODES=bf16 timeout 150 xtask/gpu-scripts/multigpu.sh > "$OUT/multi.log" 2>&1
cat $MOUT/one16.err $MOUT/multi_r0.err >> "$OUT/multi.log"
tail -14 "$OUT/multi.log"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 150 "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
  --csv --print-units base "$bin" bench-unet --device cuda --configs 64:256:16 --modes bf16 \
  --iters 1 --warm 3 --profile-steps > "$OUT/ncu_bf16.csv" 2> "$OUT/ncu_bf16.err"; echo "ncu exit $?"
