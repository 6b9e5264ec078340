#!/usr/bin/env bash
# Round 50 (issue #7), on the GPU machine's Xeon, no GPU used: the Winograd filter gradient with
# blocks kept near L2 (round 49: at 8 threads its 4 MiB blocks made 128²/64² memory-bound). The
# convolutions layer by layer with and without the Winograd filter gradient
# (MAGMA_CPU_CONV=no-winograd-filter), alternating, at 2 and 8 pinned cores; then bench-unet
# beside the PyTorch peer at 2 and 8 threads.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
for rep in a b; do
  for t in 2 8; do
    cores=$([ $t = 2 ] && echo 0,1 || echo 0-7)
    for m in default no-winograd-filter; do
      MAGMA_CPU_CONV=$m RAYON_NUM_THREADS=$t timeout 100 taskset -c $cores gpu-bundle/bench_conv > "$OUT/conv${t}_${m}_$rep.log" 2>&1
      echo "== conv$t $m $rep exit $? $(grep -E '^\| total' "$OUT/conv${t}_${m}_$rep.log" | head -1)"
    done
  done
done
cpu() { # NAME CORES THREADS CONFIGS
  timeout 200 taskset -c "$2" "$bin" bench-unet --device cpu --configs "$4" --threads "$3" --iters 6 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
cpu t2 0,1 2 16:128:8
cpu t8 0-7 8 16:128:8
