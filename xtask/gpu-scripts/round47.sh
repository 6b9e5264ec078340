#!/usr/bin/env bash
# Round 47 (issue #7), on the GPU machine's Xeon, no GPU used: why 8 threads scale badly (round 46:
# 2 -> 8 threads 26 -> 45 img/s, PyTorch 22 -> 88). Per-op host time (MAGMA_PROFILE_HOST) at 2 and
# 8 pinned cores, the convolutions layer by layer (bench_conv) at 8 threads with the Winograd
# kernels and without (MAGMA_CPU_CONV=direct), then the Winograd build against the peer.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
prof() { # NAME CORES THREADS
  MAGMA_PROFILE_HOST=1 timeout 120 taskset -c "$2" "$bin" bench-unet --device cpu --configs 16:128:8 --threads "$3" --iters 4 --warm 2 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
prof prof2 0,1 2
prof prof8 0-7 8
for m in default direct; do
  MAGMA_CPU_CONV=$m RAYON_NUM_THREADS=8 timeout 100 taskset -c 0-7 gpu-bundle/bench_conv > "$OUT/conv8_$m.log" 2>&1
  echo "== conv8 $m exit $?"; grep -E "^\| total" "$OUT/conv8_$m.log"
done
MAGMA_CPU_CONV=default RAYON_NUM_THREADS=2 timeout 100 taskset -c 0,1 gpu-bundle/bench_conv > "$OUT/conv2_default.log" 2>&1
MAGMA_CPU_CONV=direct RAYON_NUM_THREADS=2 timeout 100 taskset -c 0,1 gpu-bundle/bench_conv > "$OUT/conv2_direct.log" 2>&1
grep -E "^\| total" "$OUT"/conv2_*.log
cpu() { # NAME CORES THREADS CONFIGS
  timeout 200 taskset -c "$2" "$bin" bench-unet --device cpu --configs "$4" --threads "$3" --iters 6 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
cpu t2 0,1 2 16:128:8
cpu t8 0-7 8 16:128:8
