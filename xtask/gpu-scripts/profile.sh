#!/usr/bin/env bash
# Kernel time of one U-Net training step (base 64, 256², batch 16) in TF32 and bf16, by Nsight
# Compute (gpu__time_duration of every kernel between cuProfilerStart/Stop, clocks untouched),
# summed by kernel name and by our own grouping; the CSV stays in $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $ncu"
for mode in ${MODES:-bf16 tf32}; do
  timeout 240 "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
    --csv --print-units base "$bin" bench-unet --device cuda --configs 64:256:16 --modes $mode \
    --iters 1 --warm 3 --profile-steps > "$OUT/ncu_$mode.csv" 2> "$OUT/ncu_$mode.err"
  echo "$mode exit $? ($(wc -l < "$OUT/ncu_$mode.csv") lines)"
  python3 - "$OUT/ncu_$mode.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
# The benchmark's own JSON line has commas too: the table starts at the header row.
h = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
hdr = rows[h]; rows = rows[h + 1:]
ki, vi = hdr.index("Kernel Name"), hdr.index("Metric Value")
by = collections.Counter(); cnt = collections.Counter()
for r in rows:
    try: v = float(r[vi].replace(",", ""))
    except ValueError: continue
    by[r[ki][:90]] += v; cnt[r[ki][:90]] += 1
total = sum(by.values())
print(f"kernels {sum(cnt.values())}, total {total/1e6:.2f} ms")
for k, v in by.most_common(45):
    print(f"{v/1e6:8.3f} ms {100*v/total:5.1f}% x{cnt[k]:4d} {k}")
PY
done
