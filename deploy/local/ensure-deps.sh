#!/usr/bin/env bash
# ensure-deps.sh: install whatever Switchback's local build and test loop is missing on a
# Debian 12 machine, and skip whatever is already there.
#
# Why: a fresh machine needs protoc (for the proto/ build), etcd (the controller's store),
# OpenSSL headers and a C toolchain (for native crates), and a Python virtualenv with the
# client libraries the black-box API tests drive the router with (the official `openai`
# SDK, langchain-openai, litellm, instructor, and jsonschema for the OpenAPI checks), at
# the versions pinned in tests/python/requirements.txt. Re-running is cheap: the script
# checks before it installs, runs apt-get update at most once, only when something is
# missing, and reinstalls the Python libraries only when the pinned set changes.
#
# Usage: ensure-deps.sh      (needs root or sudo only if an apt package is missing)
# Env: SWITCHBACK_CACHE (default ~/.cache/switchback); the venv is $CACHE/venv.
# stdout: the venv path. Progress goes to stderr.
set -euo pipefail

CACHE="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
VENV="$CACHE/venv"
REQUIREMENTS="$(dirname "$0")/../../tests/python/requirements.txt"

log() { printf 'ensure-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# present PKG: true if what the apt package provides is already usable.
present() {
  case $1 in
    protobuf-compiler) command -v protoc ;;
    # protoc's well-known types (google/protobuf/*.proto), which etcd-client's protos import.
    libprotobuf-dev) test -f /usr/include/google/protobuf/descriptor.proto ;;
    etcd-server) command -v etcd ;;
    etcd-client) command -v etcdctl ;;
    pkg-config | curl) command -v "$1" ;;
    # Whatever python3 is on PATH (pyenv, say) can already make venvs: no Debian package needed.
    python3-venv) python3 -c 'import ensurepip, venv' 2>/dev/null ;;
    *) [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == ii* ]] ;;
  esac >/dev/null
}

as_root() {
  if ((EUID == 0)); then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

missing=()
for pkg in protobuf-compiler libprotobuf-dev etcd-server etcd-client pkg-config libssl-dev \
  build-essential curl python3-venv; do
  present "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
else
  log "apt packages: all present"
fi

# The pinned Rust toolchain (rust-toolchain.toml). Where rustup cannot download it but the
# installed stable toolchain is that very version, link it under the pinned name.
pinned=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "$0")/../../rust-toolchain.toml")
if command -v rustup >/dev/null && ! rustup toolchain list | grep -q "^$pinned"; then
  if rustc +stable --version 2>/dev/null | grep -q "^rustc $pinned "; then
    log "linking the installed stable toolchain as $pinned"
    rustup toolchain link "$pinned" "$(rustc +stable --print sysroot)"
  else
    log "installing Rust $pinned"
    rustup toolchain install "$pinned" --profile minimal -c rustfmt -c clippy >&2
  fi
fi

# A venv whose interpreter no longer runs (its base python was removed) is rebuilt.
if ! "$VENV/bin/python" -c '' 2>/dev/null; then
  log "creating venv $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! python3 -m venv "$VENV"; then
    log "python3 -m venv failed; trying virtualenv"
    rm -rf "$VENV"
    python3 -m virtualenv -q "$VENV" || die "could not create $VENV (install python3-venv or virtualenv)"
  fi
fi

# The venv holds the pinned set once its marker names the requirements file's hash; a changed
# pin (or an interrupted install, which leaves no marker) installs again.
marker="$VENV/.switchback-requirements"
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [[ "$(cat "$marker" 2>/dev/null)" != "$want" ]]; then
  log "installing tests/python/requirements.txt into $VENV"
  rm -f "$marker"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" >&2
  printf '%s\n' "$want" >"$marker"
else
  log "python test libraries (tests/python/requirements.txt): present"
fi

printf '%s\n' "$VENV"
