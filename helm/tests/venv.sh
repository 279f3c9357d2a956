#!/usr/bin/env bash
# helm/tests/venv.sh: make (or reuse) the Python venv with helm-python-sdk and
# kubernetes-validate pinned in requirements.txt, and print its path.
#
# Used by check.sh (the chart tests) and deploy/kind/up.sh (to install the chart where no
# helm binary is). Needs python3 (3.10+) with venv and PyPI. The venv lives at
# $SWITCHBACK_CACHE/helm-venv (default ~/.cache/switchback) and is rebuilt only when
# requirements.txt changed or the venv no longer runs, so a second call takes no time.
# stdout: the venv path. Progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache="${SWITCHBACK_CACHE:-$HOME/.cache/switchback}"
venv="$cache/helm-venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

log() { printf 'helm venv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

want=$(sha256sum "$requirements" | cut -d' ' -f1)
if ! "$venv/bin/python" -c '' 2>/dev/null || [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  command -v python3 >/dev/null || die "python3 is not installed"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "python3 is $(python3 -V 2>&1); helm-python-sdk needs 3.10 or newer"
  log "creating $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv" 2>/dev/null || python3 -m virtualenv -q "$venv" ||
    die "could not create $venv (install python3-venv)"
  log "installing $(grep -cvE '^(#|$)' "$requirements") pinned packages (helm-python-sdk bundles Helm's Go library, ~85 MB)"
  # Wheels only: helm-python-sdk's sdist would try to build the Go library.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
    -r "$requirements" >&2
  # Written last: an interrupted install leaves no stamp and is redone next time.
  printf '%s\n' "$want" >"$stamp"
fi
printf '%s\n' "$venv"
