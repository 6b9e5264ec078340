#!/usr/bin/env bash
# Round 51 (issue #7), on the GPU machine's Xeon, no GPU used: the build after round 50's filter
# rule. Per-op host time at 2 and 8 pinned cores, then bench-unet beside the PyTorch peer on the
# same cores, alternating: three times at 2 threads, three at 8.
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
cpu() { # NAME CORES THREADS CONFIGS
  timeout 200 taskset -c "$2" "$bin" bench-unet --device cpu --configs "$4" --threads "$3" --iters 6 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c; do
  cpu t2$rep 0,1 2 16:128:8
  cpu t8$rep 0-7 8 16:128:8
done
