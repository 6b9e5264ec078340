#!/usr/bin/env bash
# Round 59 (issue #7), on the GPU machine's Xeon, no GPU used: the F(3x3, 4x4) Winograd filter
# gradient. Filter gradients layer by layer (`bench_conv --filter-only`) with F(2x2)'s filter
# gradient (MAGMA_W4F_MIN_TILES huge), the default block budget, and swept budgets / minimum
# tiles (MAGMA_W4F_BUDGET, MAGMA_W4F_MIN_TILES: tuning switches of this build only), at 2 and 8
# threads; then bench-unet beside the PyTorch peer on the same pinned cores, the round-58 build
# (gpu-bundle/old/) and this one alternating, twice at 2 and 8 threads.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
lscpu | grep -E "Model name|^CPU\(s\)|L2|L3"
filt() { # NAME CORES THREADS ENV...
  local name=$1 cores=$2 threads=$3; shift 3
  env RAYON_NUM_THREADS=$threads "$@" timeout 60 taskset -c "$cores" gpu-bundle/bench_conv --filter-only > "$OUT/$name.log" 2>&1
  echo "== $name: $(grep -E '^\| (enc|dec|mid|total)' "$OUT/$name.log" | cut -d'|' -f2,7 | tr -s ' ' | tr '\n' ' ')"
}
cfgs() { # PREFIX CORES THREADS
  filt $1-f2 $2 $3 MAGMA_W4F_MIN_TILES=1000000000
  filt $1-dflt $2 $3
  filt $1-t32 $2 $3 MAGMA_W4F_MIN_TILES=32
  filt $1-b128t32 $2 $3 MAGMA_W4F_BUDGET=131072 MAGMA_W4F_MIN_TILES=32
  filt $1-b512 $2 $3 MAGMA_W4F_BUDGET=524288
  filt $1-b2m $2 $3 MAGMA_W4F_BUDGET=2097152
}
cfgs c2a 0,1 2
cfgs c8a 0-7 8
cfgs c2b 0,1 2
cfgs c8b 0-7 8
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
