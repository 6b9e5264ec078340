#!/usr/bin/env bash
# Round 46 (issue #7), on the GPU machine's Xeon, no GPU used: the CPU backend of the session-start
# build (c090c95) beside the PyTorch peer (CPU, same threads), both pinned with taskset to the same
# 2 and then 8 cores; U-Net base 16 (and 32), depth 4, 128², batch 8. Two alternating repetitions.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="${BIN:-$root/gpu-bundle/xtask-tasks}"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|MHz|L2|L3|Flags" | sed 's/Flags:.*\(avx512[a-z_0-9]* \).*/&/' | cut -c1-200 > "$OUT/lscpu.txt"
grep -E "Model name|^CPU\(s\)" "$OUT/lscpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.backends.cpu.get_cpu_capability())"
cpu() { # NAME CORES THREADS CONFIGS
  timeout 280 taskset -c "$2" "$bin" bench-unet --device cpu --configs "$4" --threads "$3" --iters 6 --warm 2 --peer python3 --json "$OUT/$1.json" > "$OUT/$1.log" 2>&1
  echo "== $1 exit $?"; grep -E "^\| [0-9]" "$OUT/$1.log"
}
cpu t2a 0,1 2 16:128:8
cpu t8a 0-7 8 16:128:8
cpu t2b 0,1 2 16:128:8
cpu t8b 0-7 8 16:128:8,32:128:8
