# The start every round script shares (sourced, not run): $OUT, the repository root as the working
# folder, $bin (the bundle's xtask-tasks), the GPU's name, every GPU test binary of the bundle
# (log in $OUT/tests.log, the summary printed), and the PyTorch venv's NVIDIA libraries on the
# library path for the benchmarks.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi -L
(cd gpu-bundle && timeout 240 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh: (PASS|FAIL|[0-9])|FAILED|panicked' "$OUT/tests.log" | tail -12
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)

# bench-unet of U-Net base 64, 256², batch 16 in fp32/tf32/bf16 beside the PyTorch peer, into
# $OUT/NAME.{log,json}; further arguments are passed on (e.g. --peer-compile bf16). Prints the
# table rows and the exit status.
bench_vs_peer() {
  local name=$1; shift
  timeout 330 "$bin" bench-unet --device cuda --configs 64:256:16 --modes fp32,tf32,bf16 --iters 20 --warm 5 --peer python3 "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  echo "exit $?" >> "$OUT/$name.log"
  grep -E "\| 64|exit|rror|note: .*has no" "$OUT/$name.log" | tail -6
}

# The kernels of one training step in launch order (Nsight Compute, clocks untouched) for each
# mode given, into $OUT/seq_MODE.csv.
kernel_sequence() {
  local ncu mode
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  for mode in "$@"; do
    timeout 150 "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
      --csv --print-units base "$bin" bench-unet --device cuda --configs 64:256:16 --modes $mode \
      --iters 1 --warm 3 --profile-steps > "$OUT/seq_$mode.csv" 2> "$OUT/seq_$mode.err"
    echo "== $mode ncu exit $?"
  done
}
