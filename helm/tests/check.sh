#!/usr/bin/env bash
# helm/tests/check.sh: lint, render and validate the Helm chart helm/switchback with Helm's
# own library, and check what the binaries will make of it (helm/tests/check_chart.py says
# what and why).
#
# Needs python3 (3.10+) with venv and PyPI; no helm binary and no cluster. The venv
# (venv.sh) is made once under $SWITCHBACK_CACHE/helm-venv, so a second run takes seconds.
#
# Usage: helm/tests/check.sh [-v]   (-v prints why each bad values file was refused)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=$("$here/venv.sh")
exec "$venv/bin/python" "$here/check_chart.py" "$@"
