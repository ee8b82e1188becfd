#!/usr/bin/env bash
# Set up (with the test, MuJoCo, NIR, tuning and video extras) and run the test suite. The tests of `spikerl tune`
# through PostgreSQL run when SPIKERL_TEST_POSTGRES_URL is set (.ci/run starts a server for them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev mujoco deploy tune video
exec .venv/bin/python -m pytest -q "$@"
