#!/usr/bin/env bash
# check.sh: the CUDA path, end to end, on a machine with an NVIDIA GPU and the CUDA toolkit
# (nvcc on PATH), the Rust toolchain and the package registries.
#
#   deploy/gpu/check.sh [--models small,medium,large]
#
# 1. builds the worker and the bench with mistral.rs's `cuda` feature (CUDA_COMPUTE_CAP is
#    read from nvidia-smi when unset);
# 2. fetches the three models of the ladder;
# 3. builds llama-cpp-python with its CUDA kernels (deploy/bench/ensure-llama-cpp.sh cuda);
# 4. runs worker-bench with `--device cuda`: every model on the GPU through the worker's
#    gRPC Generate and through llama.cpp, one table.
# The table goes to the `worker-bench-cuda` section of docs/BENCHMARKS.md, the plot to
# docs/img/worker-bench-cuda.svg, the raw numbers to $SWITCHBACK_CACHE/worker-bench-cuda.json.
# The CUDA build has its own target dir ($SWITCHBACK_CACHE/target-cuda): the CPU build stays.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export SWITCHBACK_CACHE="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
export CARGO_TARGET_DIR="${SWITCHBACK_CUDA_TARGET_DIR:-$SWITCHBACK_CACHE/target-cuda}"
step() { printf '\n==> %s\n' "$*" >&2; }

command -v nvidia-smi >/dev/null || { echo "check.sh: no nvidia-smi: not a GPU machine" >&2; exit 1; }
command -v nvcc >/dev/null || { echo "check.sh: no nvcc: install the CUDA toolkit" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2
if [[ -z ${CUDA_COMPUTE_CAP:-} ]]; then
  CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d .)
  export CUDA_COMPUTE_CAP
fi

step "dependencies and models"
deploy/local/ensure-deps.sh >/dev/null
deploy/local/fetch-models.sh small medium large >/dev/null
llama_python=$(deploy/bench/ensure-llama-cpp.sh cuda)

step "building the worker with CUDA (compute capability $CUDA_COMPUTE_CAP)"
cargo build --locked -p switchback-worker -p switchback-tests --features switchback-worker/cuda --bins

step "worker-bench on the GPU"
"$CARGO_TARGET_DIR/debug/worker-bench" --device cuda --llama-python "$llama_python" \
  --section worker-bench-cuda --plot docs/img/worker-bench-cuda.svg \
  --json "$SWITCHBACK_CACHE/worker-bench-cuda.json" "$@"
