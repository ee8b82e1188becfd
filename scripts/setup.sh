#!/usr/bin/env bash
# Create .venv (once) and install spikerl into it in editable mode, with the extras given as arguments.
# Usage: scripts/setup.sh [EXTRA ...]      e.g. scripts/setup.sh dev mujoco
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
extras=$(IFS=,; echo "$*")
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" 2>&1 \
    | grep -v "^WARNING: Location .* is ignored" || true
.venv/bin/python -c "import spikerl, torch, gymnasium" || { echo "setup failed: spikerl did not install" >&2; exit 1; }
