#!/usr/bin/env bash
# Round 54 (issue #7), on the GPU machine's Xeon, no GPU used: the Winograd filter gradient with one sum per (frequency, o, c) (16x smaller accumulator), used at 8 threads and on 16²/128² planes too; as round 53: F(4x4) for the
# forward and data passes (F(2x2) on 16² planes), 2x2 pooling rows without branches, gradient
# sums added in place. The convolutions layer by layer (against MAGMA_CPU_CONV=no-winograd-filter)
# and per-op host time at 2 and 8 pinned cores, then bench-unet beside the PyTorch peer on the
# same cores, alternating, three times at 2 threads and three times at 8.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|L2|L3"
for t in 2 8; do
  cores=$([ $t = 2 ] && echo 0,1 || echo 0-7)
  RAYON_NUM_THREADS=$t taskset -c $cores gpu-bundle/bench_conv > "$OUT/conv$t.log" 2>&1
  RAYON_NUM_THREADS=$t MAGMA_CPU_CONV=no-winograd-filter taskset -c $cores gpu-bundle/bench_conv > "$OUT/conv${t}w2.log" 2>&1
  echo "== conv $t: $(grep '^| total' "$OUT/conv$t.log") no-winograd-filter: $(grep '^| total' "$OUT/conv${t}w2.log")"
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
