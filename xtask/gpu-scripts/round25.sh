#!/usr/bin/env bash
# (The experiment's switch, MAGMA_EXP_*, was removed after the round: the script keeps the record.)
# Round 25 (issue #11): where the first layer and the 1x1 head spend their time — the kernels of
# one TF32 and one bf16 step in launch order (Nsight Compute), the first convolutions and those
# around the loss printed; TF32 with the first layer's input padded to 8 channels
# (MAGMA_EXP_FP32_PAD, an experiment) beside the default.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi -L
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
seq_report() {
  python3 - "$1" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
h = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
hdr = rows[h]; rows = rows[h + 1:]
ki, vi = hdr.index("Kernel Name"), hdr.index("Metric Value")
seq = []
for r in rows:
    try: seq.append((float(r[vi].replace(",", "")) / 1e3, r[ki]))
    except ValueError: pass
print(f"kernels {len(seq)}, total {sum(v for v,_ in seq)/1e3:.2f} ms")
loss = [i for i, (_, k) in enumerate(seq) if "entropy" in k.lower() or "loss" in k.lower()]
show = set(range(0, 14)) | set(range(len(seq) - 40, len(seq)))
for i in loss[:1]:
    show |= set(range(i - 10, i + 16))
for i in sorted(x for x in show if 0 <= x < len(seq)):
    print(f"{i:4d} {seq[i][0]:8.1f} us  {seq[i][1][:110]}")
PY
}
for mode in tf32 bf16; do
  timeout 200 "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
    --csv --print-units base "$bin" bench-unet --device cuda --configs 64:256:16 --modes $mode \
    --iters 1 --warm 3 --profile-steps > "$OUT/seq_$mode.csv" 2> "$OUT/seq_$mode.err"
  echo "== $mode exit $?"; seq_report "$OUT/seq_$mode.csv"
done
MAGMA_EXP_FP32_PAD=8 timeout 200 "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
    --csv --print-units base "$bin" bench-unet --device cuda --configs 64:256:16 --modes tf32 \
    --iters 1 --warm 3 --profile-steps > "$OUT/seq_tf32_pad8.csv" 2> "$OUT/seq_tf32_pad8.err"
echo "== tf32 pad8 exit $?"; seq_report "$OUT/seq_tf32_pad8.csv"
