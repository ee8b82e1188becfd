#!/usr/bin/env bash
# The checks that need a GPU, as one script for a machine with CUDA: the CUDA tests, then the actor
# benchmark on the GPU (paths reference, fused, compiled, the ANN twin, the floor and the peers).
# Usage: benchmarks/gpu_check.sh [ROUNDS]   (after scripts/setup.sh bench)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
"$python" -m pytest -q tests/test_cuda.py
"$python" benchmarks/actor_speed.py --device cuda --rounds "${1:-5}"
