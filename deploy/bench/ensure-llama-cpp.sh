#!/usr/bin/env bash
# ensure-llama-cpp.sh: install the pinned llama-cpp-python that worker-bench measures
# Switchback against, in its own venv, built from its sdist (it vendors llama.cpp).
#
# Usage: ensure-llama-cpp.sh [cpu|cuda]      (default cpu)
#   cpu   llama.cpp's CPU kernels for the same instruction set as Switchback's x86-64-v3
#         build (AVX2, FMA, F16C, BMI2; GGML_NATIVE off), so both sides run the same ISA
#   cuda  llama.cpp with its CUDA kernels (needs nvcc), for deploy/gpu/check.sh
# Env: SWITCHBACK_CACHE (default ~/.cache/switchback); the venv is $CACHE/bench-venv[-cuda].
# stdout: the venv's python. Progress goes to stderr. A second run installs nothing.
set -euo pipefail

VERSION=0.3.36   # exact pin: llama-cpp-python, and the llama.cpp it vendors
flavour="${1:-cpu}"
CACHE="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
case $flavour in
  cpu)
    venv="$CACHE/bench-venv"
    cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_OPENMP=ON"
    ;;
  cuda)
    venv="$CACHE/bench-venv-cuda"
    cmake_args="-DGGML_CUDA=ON"
    ;;
  *) echo "usage: $0 [cpu|cuda]" >&2; exit 64 ;;
esac
log() { printf 'ensure-llama-cpp: %s\n' "$*" >&2; }

if "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
  log "llama-cpp-python $VERSION ($flavour) already in $venv"
else
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  log "building llama-cpp-python $VERSION ($flavour) from its sdist: several minutes on 2 cores"
  CMAKE_ARGS="$cmake_args" "$venv/bin/pip" install --quiet --no-cache-dir \
    --disable-pip-version-check "llama-cpp-python==$VERSION" >&2
fi
printf '%s\n' "$venv/bin/python"
