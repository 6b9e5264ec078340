#!/usr/bin/env bash
# Round 58 (issue #7), on the GPU machine's Xeon, no GPU used: the F(4x4) kernel's padded rows
# split straight from the image (no row copy) and its transforms' vector arrays built as array
# literals (no memset per 16 tiles). The round-56/57 build is carried as gpu-bundle/old/; the
# convolutions layer by layer alternate old and new (2 threads twice, 8 threads once), then
# bench-unet beside the PyTorch peer on the same pinned cores, three times at 2 and 8 threads.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
lscpu | grep -E "Model name|^CPU\(s\)"
conv() { # NAME BINARY CORES THREADS
  RAYON_NUM_THREADS=$4 timeout 100 taskset -c "$3" "$2" > "$OUT/$1.log" 2>&1
  echo "== $1: $(grep -E '^\| (total|enc0b|dec0b|dec0a)' "$OUT/$1.log" | cut -d'|' -f2,5,6,7 | tr '\n' ' ')"
}
for rep in a b; do
  conv conv2old$rep gpu-bundle/old/bench_conv 0,1 2
  conv conv2new$rep gpu-bundle/bench_conv 0,1 2
done
conv conv8old gpu-bundle/old/bench_conv 0-7 8
conv conv8new gpu-bundle/bench_conv 0-7 8
run() { # NAME CORES THREADS CONFIG ITERS
  timeout 200 taskset -c "$2" gpu-bundle/xtask-tasks bench-unet --device cpu --configs "$4" --threads "$3" --iters "$5" --warm 2 --peer python3 > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
for rep in a b c; do
  run t2$rep 0,1 2 16:128:8 8
  run t8$rep 0-7 8 16:128:8 8
done
