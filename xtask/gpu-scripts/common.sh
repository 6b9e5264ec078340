# The start every round script shares (sourced, not run): $OUT, the repository root as the working
# folder, $bin (the bundle's xtask-tasks), the GPU's name, every GPU test binary of the bundle
# (log in $OUT/tests.log, the summary printed), and the PyTorch venv's NVIDIA libraries on the
# library path for the benchmarks.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root="$(cd "$(dirname "$0")/../.." && pwd)"; cd "$root"
bin="$root/gpu-bundle/xtask-tasks"
nvidia-smi -L
(cd gpu-bundle && timeout 240 ./run.sh > "$OUT/tests.log" 2>&1; echo "run.sh exit $?" >> "$OUT/tests.log")
grep -hE 'run.sh: (PASS|FAIL|[0-9])|FAILED|panicked' "$OUT/tests.log" | tail -12
export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib | paste -sd:)
