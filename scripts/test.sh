#!/usr/bin/env bash
# Set up (with the test and MuJoCo extras) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev mujoco deploy
exec .venv/bin/python -m pytest -q "$@"
