#!/usr/bin/env bash
# Round 70 (issue #7), on the GPU machine's Xeon, no GPU used: the data gradient of stride-1
# convolutions that neither Winograd nor the direct kernel take (the 8^2 level) as the forward
# im2col of the output gradient with flipped filters, instead of GEMM into columns + col2im;
# against round 69's build (gpu-bundle/old/). bench_conv at 8 threads, base 32 and 16, old and
# new; then bench-unet base 16 beside the PyTorch peer, old and new alternating, three times at
# 8 threads and twice at 2.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
conv() { # NAME BINARY BASE
  RAYON_NUM_THREADS=8 timeout 100 taskset -c 0-7 "$2" --base "$3" > "$OUT/$1.log" 2>&1
  echo "== $1: $(grep -E '^\| (mid|total)' "$OUT/$1.log" | cut -d'|' -f2,5,6,7 | tr -s ' ' | tr '\n' ';')"
}
conv b32old gpu-bundle/old/bench_conv 32
conv b32new gpu-bundle/bench_conv 32
conv b16old gpu-bundle/old/bench_conv 16
conv b16new gpu-bundle/bench_conv 16
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
