#!/usr/bin/env bash
# Round 69 (issue #7), on the GPU machine's Xeon, no GPU used: Winograd blocks of tile rows
# rounded up to whole register tiles of 32 tiles (F(2x2) at 16^2 with 512 channels, F(4x4) at
# 32^2 with 256 and at 64^2 with 128 had blocks of 16 tiles: half of every channel sum idle)
# against round 65's build (gpu-bundle/old/). bench_conv at 8 threads, base 16 and 32, old and
# new alternating; then bench-unet base 32 beside the PyTorch peer, old and new alternating.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
conv() { # NAME BINARY BASE
  RAYON_NUM_THREADS=8 timeout 100 taskset -c 0-7 "$2" --base "$3" > "$OUT/$1.log" 2>&1
  echo "== $1:"; grep -E '^\| (enc|dec|mid|total)' "$OUT/$1.log" | cut -d'|' -f2,5,6,7 | tr -s ' ' | tr '\n' ';'; echo
}
for rep in a b; do
  conv b32old$rep gpu-bundle/old/bench_conv 32
  conv b32new$rep gpu-bundle/bench_conv 32
done
conv b16old gpu-bundle/old/bench_conv 16
conv b16new gpu-bundle/bench_conv 16
run() { # NAME BINARY CORES THREADS
  timeout 200 taskset -c "$3" "$2" bench-unet --device cpu --configs 32:128:8 --threads "$4" --iters 6 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b; do
  run b32t8old$rep gpu-bundle/old/xtask-tasks 0-7 8
  run b32t8new$rep gpu-bundle/xtask-tasks 0-7 8
done
run b32t2new gpu-bundle/xtask-tasks 0,1 2
