#!/usr/bin/env bash
# Round 65 (issue #7), on the GPU machine's Xeon, no GPU used: the im2col filter gradient with
# one image per thread (the 8^2 level at 8 threads, and up3's) as one GEMM over the whole batch
# (filter_gemm_over_batch) instead of per-image GEMMs with a 64-long inner dimension added row
# block by row block, and the per-group path's dW^T -> dW transpose on the rayon pool. The
# round-64 build (host buffer pool) is carried as gpu-bundle/old/. bench_conv at 8 and 2 threads,
# old and new alternating; then bench-unet beside the PyTorch peer, old and new alternating.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
conv() { # NAME BINARY CORES THREADS
  RAYON_NUM_THREADS=$4 timeout 100 taskset -c "$3" "$2" > "$OUT/$1.log" 2>&1
  echo "== $1:"; grep -E '^\| (enc|dec|mid|total|up|head)' "$OUT/$1.log" | cut -d'|' -f2,5,6,7 | tr -s ' ' | tr '\n' ';'; echo
}
conv c8old gpu-bundle/old/bench_conv 0-7 8
conv c8new gpu-bundle/bench_conv 0-7 8
conv c8old2 gpu-bundle/old/bench_conv 0-7 8
conv c8new2 gpu-bundle/bench_conv 0-7 8
conv c2old gpu-bundle/old/bench_conv 0,1 2
conv c2new gpu-bundle/bench_conv 0,1 2
run() { # NAME BINARY CORES THREADS
  timeout 150 taskset -c "$3" "$2" bench-unet --device cpu --configs 16:128:8 --threads "$4" --iters 8 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c; do
  run t8old$rep gpu-bundle/old/xtask-tasks 0-7 8
  run t8new$rep gpu-bundle/xtask-tasks 0-7 8
done
for rep in a b; do
  run t2old$rep gpu-bundle/old/xtask-tasks 0,1 2
  run t2new$rep gpu-bundle/xtask-tasks 0,1 2
done
