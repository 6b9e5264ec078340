#!/usr/bin/env bash
# Sourced by the round scripts (round64.sh on): $OUT (default /tmp/out) made, the repository
# root as working directory, and the helpers every round's measurements share.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# unet_vs_torch NAME BINARY CORES THREADS [CONFIG [ITERS]]: `bench-unet --device cpu` of BINARY
# beside the PyTorch peer in one invocation, pinned to CORES (default config 16:128:8, 8 timed
# steps); the log goes to $OUT/NAME.log, the table's row to stdout.
unet_vs_torch() {
  local name=$1 binary=$2 cores=$3 threads=$4 config=${5:-16:128:8} iters=${6:-8}
  timeout 200 taskset -c "$cores" "$binary" bench-unet --device cpu --configs "$config" \
    --threads "$threads" --iters "$iters" --warm 2 --peer python3 > "$OUT/$name.log" 2>&1
  echo "== $name exit $?"; grep -E "^\| [0-9]" "$OUT/$name.log"
}

# old_new_pairs REPS8 REPS2: base 16 beside PyTorch, the carried build (gpu-bundle/old/) and the
# new one alternating, REPS8 times at 8 threads (cores 0-7), then REPS2 times at 2 (cores 0,1).
old_new_pairs() {
  local rep
  for rep in $(seq "$1"); do
    unet_vs_torch "t8old$rep" gpu-bundle/old/xtask-tasks 0-7 8
    unet_vs_torch "t8new$rep" gpu-bundle/xtask-tasks 0-7 8
  done
  for rep in $(seq "$2"); do
    unet_vs_torch "t2old$rep" gpu-bundle/old/xtask-tasks 0,1 2
    unet_vs_torch "t2new$rep" gpu-bundle/xtask-tasks 0,1 2
  done
}

# conv_rows NAME BINARY CORES THREADS ROWS FIELDS [ARGS...]: bench_conv (BINARY ARGS...) on
# THREADS threads pinned to CORES; the rows whose layer matches the regex ROWS, columns FIELDS
# (`cut -d'|' -f`), on one line.
conv_rows() {
  local name=$1 binary=$2 cores=$3 threads=$4 rows=$5 fields=$6
  shift 6
  RAYON_NUM_THREADS=$threads timeout 200 taskset -c "$cores" "$binary" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: $(grep -E "^\| ($rows)" "$OUT/$name.log" | cut -d'|' -f"$fields" | tr -s ' ' | tr '\n' ';')"
}
