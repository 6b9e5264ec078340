#!/usr/bin/env bash
# Round 56 (issue #7), on the GPU machine's Xeon, no GPU used: the final build (round 55 plus the
# cross-entropy labels checked on the pool). As round 55, and base 32 (the issue's second figure) once
# at 2 and once at 8 threads. Round 55: the batch
# norm + ReLU backward's mask from x (no read of y), the im2col filter gradient split by rows
# over the batch with one image per thread on planes of <= 64 positions, runtime AVX-512
# dispatch of the plain-Rust loops (batch norm, Adam, pooling), the 2x2 max-pool backward in
# vectors, column-pair im2col/col2im for the transposed convolutions. Convolutions layer by
# layer and per-op host time at 2 and 8 pinned cores, then bench-unet beside the PyTorch peer
# on the same cores, alternating, three times at 2 threads and three at 8.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|L2|L3"
for t in 2 8; do
  cores=$([ $t = 2 ] && echo 0,1 || echo 0-7)
  RAYON_NUM_THREADS=$t taskset -c $cores gpu-bundle/bench_conv > "$OUT/conv$t.log" 2>&1
  echo "== conv $t: $(grep '^| total' "$OUT/conv$t.log" | tr '\n' ' ')"
  MAGMA_PROFILE_HOST=1 timeout 120 taskset -c $cores "$bin" bench-unet --device cpu --configs 16:128:8 --threads $t --iters 4 --warm 2 > "$OUT/prof$t.log" 2>&1
  grep -E "ms|^\| [0-9]" "$OUT/prof$t.log" | head -16
done
cpu() { # NAME CORES THREADS
  timeout 200 taskset -c "$2" "$bin" bench-unet --device cpu --configs 16:128:8 --threads "$3" --iters 8 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c; do
  cpu t2$rep 0,1 2
  cpu t8$rep 0-7 8
done
b32() { # NAME CORES THREADS ITERS
  timeout 200 taskset -c "$2" "$bin" bench-unet --device cpu --configs 32:128:8 --threads "$3" --iters "$4" --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
b32 b32t2 0,1 2 4
b32 b32t8 0-7 8 6
