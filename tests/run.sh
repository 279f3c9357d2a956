#!/usr/bin/env bash
# tests/run.sh: the whole test suite, exactly what CI runs (.ci/run calls this).
#
# Installs what is missing (Debian packages, the venv of pinned Python client libraries
# (tests/python/requirements.txt), the three models' weights, cargo-nextest, cargo-deny), then: rustfmt check, clippy with warnings as errors,
# cargo deny (licences, bans, sources), build the binaries,
# build the container images from them (deploy/docker/build-images.sh), the Helm chart
# checks (helm/tests/check.sh: lint, render, Kubernetes schemas, config keys), and every
# test with cargo-nextest (unit tests and the end-to-end tests in tests/, which start real
# etcd, controller, workers and routers as processes, and the compose cluster from the
# images), and every fuzz target for a bounded time (fuzz/run.sh: nightly cargo fuzz in its
# own target dir, SWITCHBACK_FUZZ_SECONDS per target, default 25).
#
# The cargo target dir defaults to $SWITCHBACK_CACHE/target, outside the clone, so a fresh
# clone reuses an earlier build of mistral.rs (a cold build takes ~30 min on 2 cores).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export SWITCHBACK_CACHE="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SWITCHBACK_CACHE/target}"
step() { printf '\n==> %s\n' "$*" >&2; }

step "dependencies"
venv=$(deploy/local/ensure-deps.sh)
export SWITCHBACK_PYTHON="$venv/bin/python"
deploy/local/fetch-models.sh small medium large minilm >/dev/null
if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
if ! cargo deny --version >/dev/null 2>&1; then
  step "installing cargo-deny"
  cargo install --locked cargo-deny
fi

step "rustfmt"
cargo fmt --all -- --check
# The fuzz targets are a workspace of their own (fuzz/Cargo.toml).
(cd fuzz && cargo fmt --all -- --check)

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Licences, banned crates and sources of the dependency tree (deny.toml). Not advisories:
# the RustSec database comes from GitHub, which this machine may not reach.
step "cargo deny"
cargo deny --locked check licenses bans sources

# File sizes, import circles, the request path's direction, a pure routing core.
step "layout"
python3 tests/layout/check.py

step "build"
cargo build --workspace --bins --locked
# The difficulty predictor's embedding table, distilled once from MiniLM (~30 s).
export SWITCHBACK_MINILM_DIR="$SWITCHBACK_CACHE/models/all-minilm-l6-v2"
if [[ ! -f $SWITCHBACK_MINILM_DIR/static-table.bin ]]; then
  step "distilling the MiniLM static table"
  "$CARGO_TARGET_DIR/debug/switchback-lab" distill --minilm-dir "$SWITCHBACK_MINILM_DIR"
fi

# Container images of these binaries, for the compose test (tests/tests/compose.rs). Without
# a Docker engine the step is skipped and that test fails saying why.
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  step "images"
  deploy/docker/build-images.sh
else
  step "images: skipped, no Docker engine (the compose test will fail)"
fi

step "helm chart"
helm/tests/check.sh

step "tests"
cargo nextest run --workspace --locked --no-fail-fast

# Bounded fuzzing: each target in fuzz/fuzz_targets for SWITCHBACK_FUZZ_SECONDS on its seed
# corpus; a crash fails the run and names the input (fuzz/run.sh says how to replay it).
fuzz_seconds="${SWITCHBACK_FUZZ_SECONDS:-25}"
fuzz_targets=$(find fuzz/fuzz_targets -name '*.rs' | wc -l)
step "fuzz: $fuzz_targets targets x ${fuzz_seconds} s = $((fuzz_targets * fuzz_seconds)) s of fuzzing, plus the build"
fuzz/run.sh "$fuzz_seconds"
