#!/usr/bin/env bash
# Round 60 (issue #7), on the GPU machine's Xeon, no GPU used: round 59's F(3x3, 4x4) filter
# gradient plus thread scratch aligned to cache lines (the Winograd kernels' transformed tiles
# had started 16 bytes past a line, so every vector load and store of them split across two).
# The round-58 build is carried as gpu-bundle/old/. Convolutions layer by layer, old and new
# alternating (2 threads twice, 8 threads once); the filter-gradient sweep of round 59 again
# (MAGMA_W4F_BUDGET, MAGMA_W4F_MIN_TILES: tuning switches of this build only); then bench-unet
# beside the PyTorch peer on the same pinned cores, old and new alternating, twice at 2 and 8.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
lscpu | grep -E "Model name|^CPU\(s\)"
conv() { # NAME BINARY CORES THREADS
  RAYON_NUM_THREADS=$4 timeout 100 taskset -c "$3" "$2" > "$OUT/$1.log" 2>&1
  echo "== $1:"; grep -E '^\| (enc|dec|mid|total|up)' "$OUT/$1.log" | cut -d'|' -f2,5,6,7 | tr -s ' ' | tr '\n' ';'; echo
}
for rep in a b; do
  conv conv2old$rep gpu-bundle/old/bench_conv 0,1 2
  conv conv2new$rep gpu-bundle/bench_conv 0,1 2
done
conv conv8old gpu-bundle/old/bench_conv 0-7 8
conv conv8new gpu-bundle/bench_conv 0-7 8
filt() { # NAME CORES THREADS ENV...
  local name=$1 cores=$2 threads=$3; shift 3
  env RAYON_NUM_THREADS=$threads "$@" timeout 60 taskset -c "$cores" gpu-bundle/bench_conv --filter-only > "$OUT/$name.log" 2>&1
  echo "== $name: $(grep -E '^\| (enc|dec|mid|total)' "$OUT/$name.log" | cut -d'|' -f2,7 | tr -s ' ' | tr '\n' ' ')"
}
for t in "2 0,1" "8 0-7"; do
  set -- $t
  filt c$1-f2 $2 $1 MAGMA_W4F_MIN_TILES=1000000000
  filt c$1-dflt $2 $1
  filt c$1-t32 $2 $1 MAGMA_W4F_MIN_TILES=32
  filt c$1-b128t32 $2 $1 MAGMA_W4F_BUDGET=131072 MAGMA_W4F_MIN_TILES=32
  filt c$1-b512 $2 $1 MAGMA_W4F_BUDGET=524288
done
run() { # NAME BINARY CORES THREADS
  timeout 150 taskset -c "$3" "$2" bench-unet --device cpu --configs 16:128:8 --threads "$4" --iters 8 --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b; do
  run t2old$rep gpu-bundle/old/xtask-tasks 0,1 2
  run t2new$rep gpu-bundle/xtask-tasks 0,1 2
  run t8old$rep gpu-bundle/old/xtask-tasks 0-7 8
  run t8new$rep gpu-bundle/xtask-tasks 0-7 8
done
