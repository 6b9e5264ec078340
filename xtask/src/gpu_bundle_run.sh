#!/usr/bin/env bash
# Runs the magma-dnn GPU bundle (made by `cargo xtask gpu-bundle`) on a machine with an NVIDIA GPU:
# every CUDA test binary in tests/ (one test thread each), then, given an .h5 dataset (made by
# `cargo xtask convert-hdf5`), a short `train-unet --device cuda`.
#
#   ./run.sh [DATA.h5] [extra train-unet options...]
#
# Environment: MAGMA_TRAIN_ARGS (default "--epochs 1") replaces the short training's options;
# NVIDIA_LIB_ROOT: a site-packages/nvidia folder holding cudnn/lib, cu13/lib and nccl/lib
# (default: found under /opt/torch/.venv or through python3). Exits non-zero when anything failed.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data=""
if [ $# -ge 1 ]; then
  case "$1" in
    /*) data="$1" ;;
    *) data="$PWD/$1" ;;
  esac
  shift
  [ -f "$data" ] || { echo "run.sh: no dataset file $data (make one with cargo xtask convert-hdf5)" >&2; exit 2; }
fi
cd "$here"

# cuDNN and the libraries it opens (libcublasLt.so.13, libnvrtc.so.13), and NCCL (libnccl.so.2,
# in nvidia/nccl/lib of the PyTorch venv): the dnn-ops binaries' RUNPATH names the usual pip
# locations; LD_LIBRARY_PATH adds every nvidia/*/lib this machine has (the NCCL test of
# dnn-layers and the unet tests have no RUNPATH and rely on it).
roots=()
[ -n "${NVIDIA_LIB_ROOT:-}" ] && roots+=("$NVIDIA_LIB_ROOT")
for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia; do [ -d "$d" ] && roots+=("$d"); done
if py_root="$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null)"; then
  roots+=("$py_root")
fi
extra=""
for r in "${roots[@]}"; do
  for lib in "$r"/*/lib; do
    [ -d "$lib" ] && extra="${extra:+$extra:}$lib"
  done
done
if [ -n "$extra" ]; then
  export LD_LIBRARY_PATH="$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# NVLink multicast (NVLS) must stay off on this workplace's multi-GPU machines; the NCCL code sets
# it too when unset, but the environment is the reliable place. The NCCL test fails (instead of
# skipping) when libnccl.so.2 cannot be loaded.
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
export MAGMA_NCCL_REQUIRED="${MAGMA_NCCL_REQUIRED:-1}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
  || echo "run.sh: nvidia-smi not found (continuing)"
echo "run.sh: LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
echo "run.sh: NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE MAGMA_NCCL_REQUIRED=$MAGMA_NCCL_REQUIRED"

passed=0
failed=0
failures=()
start_all=$SECONDS
for t in tests/*; do
  [ -x "$t" ] || continue
  name="$(basename "$t")"
  echo "=== $name"
  start=$SECONDS
  if "$t" --test-threads=1; then
    echo "run.sh: PASS $name ($((SECONDS - start)) s)"
    passed=$((passed + 1))
  else
    echo "run.sh: FAIL $name ($((SECONDS - start)) s)"
    failed=$((failed + 1))
    failures+=("$name")
  fi
done

if [ -n "$data" ]; then
  echo "=== train-unet --device cuda on $data"
  start=$SECONDS
  # shellcheck disable=SC2086
  if ./xtask-tasks train-unet --device cuda --data "$data" --out "$here/runs/train-unet" \
      ${MAGMA_TRAIN_ARGS:---epochs 1} "$@"; then
    echo "run.sh: PASS train-unet ($((SECONDS - start)) s)"
    passed=$((passed + 1))
  else
    echo "run.sh: FAIL train-unet ($((SECONDS - start)) s)"
    failed=$((failed + 1))
    failures+=("train-unet")
  fi
fi

echo "run.sh: $passed passed, $failed failed in $((SECONDS - start_all)) s${failures[*]:+ (failed: ${failures[*]})}"
[ "$failed" -eq 0 ]
