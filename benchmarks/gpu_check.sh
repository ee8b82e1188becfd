#!/usr/bin/env bash
# The checks that need a GPU, as one script for a machine with CUDA: the CUDA tests (backends against the
# reference on the GPU, end-to-end DQN and TD3 training on CUDA evaluated on the CPU), spiking TD3 on
# HalfCheetah-v5 trained on the GPU beside its ANN twin (steps/s, fused and compiled), then the actor
# benchmark on the GPU.
# Then populations of K = 1, 8, 32 spiking TD3 agents on HalfCheetah-v5 on the GPU (agent-steps per second).
# Usage: benchmarks/gpu_check.sh [ROUNDS] [STEPS]   (after scripts/setup.sh dev mujoco bench)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
"$python" -m pytest -q tests/test_cuda.py
benchmarks/e2e_throughput.sh runs/e2e-gpu "${2:-3000}" fused compiled -- device=cuda
"$python" benchmarks/actor_speed.py --device cuda --rounds "${1:-5}"
"$python" benchmarks/population_speed.py --dqn --td3 1 8 32 --td3-steps 1000 --device cuda
