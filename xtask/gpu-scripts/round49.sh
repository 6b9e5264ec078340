#!/usr/bin/env bash
# Round 49 (issue #7), on the GPU machine's Xeon, no GPU used: Winograd for the forward pass, data
# and filter gradients of the 3x3 convolutions on planes of 16 columns and more, and the 8-thread
# fixes. bench-unet beside the PyTorch peer pinned to the same 2 and 8 cores, three alternating
# repetitions at 2 threads, two at 8; then base 32; then bench_conv at 2 and 8 threads.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
cpu() { # NAME CORES THREADS CONFIGS
  timeout 200 taskset -c "$2" "$bin" bench-unet --device cpu --configs "$4" --threads "$3" --iters 6 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
cpu t2a 0,1 2 16:128:8
cpu t8a 0-7 8 16:128:8
cpu t2b 0,1 2 16:128:8
cpu t8b 0-7 8 16:128:8
cpu t2c 0,1 2 16:128:8
cpu t2base32 0,1 2 32:128:8
cpu t8base32 0-7 8 32:128:8
for t in 2 8; do
  cores=$([ $t = 2 ] && echo 0,1 || echo 0-7)
  RAYON_NUM_THREADS=$t timeout 100 taskset -c $cores gpu-bundle/bench_conv > "$OUT/conv$t.log" 2>&1
  echo "== conv$t exit $?"; grep -E "^\| total" "$OUT/conv$t.log"
done
