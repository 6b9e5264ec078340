#!/usr/bin/env bash
# Round 63 (issue #7), on the GPU machine's Xeon, no GPU used: the batch-wide F(2x2) filter
# gradient taken on 8^2 planes too (rows of 8 columns, half of each vector past the row; im2col
# before). The round-62 build is carried as gpu-bundle/old/ (bench_conv and xtask-tasks).
# Filter gradients layer by layer, old and new alternating, twice at 2 and 8 threads; then
# bench-unet beside the PyTorch peer, old and new alternating, three times at 2 and 8 threads.
# (The 8^2 change was reverted afterwards: see docs/perf/bench-unet.md, twelfth session.)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
lscpu | grep -E "Model name|^CPU\(s\)"
filt() { # NAME BINARY CORES THREADS
  RAYON_NUM_THREADS=$4 timeout 60 taskset -c "$3" "$2" --filter-only > "$OUT/$1.log" 2>&1
  echo "== $1: $(grep -E '^\| (mid|total)' "$OUT/$1.log" | cut -d'|' -f2,7 | tr -s ' ' | tr '\n' ' ')"
}
for rep in a b; do
  filt f2old$rep gpu-bundle/old/bench_conv 0,1 2
  filt f2new$rep gpu-bundle/bench_conv 0,1 2
  filt f8old$rep gpu-bundle/old/bench_conv 0-7 8
  filt f8new$rep gpu-bundle/bench_conv 0-7 8
done
run() { # NAME BINARY CORES THREADS
  timeout 150 taskset -c "$3" "$2" bench-unet --device cpu --configs 16:128:8 --threads "$4" --iters 8 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c; do
  run t2old$rep gpu-bundle/old/xtask-tasks 0,1 2
  run t2new$rep gpu-bundle/xtask-tasks 0,1 2
  run t8old$rep gpu-bundle/old/xtask-tasks 0-7 8
  run t8new$rep gpu-bundle/xtask-tasks 0-7 8
done
