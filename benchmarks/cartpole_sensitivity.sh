#!/usr/bin/env bash
# The CartPole-v1 sensitivity study behind docs/sensitivity.md: alpha x beta heatmaps for every
# combination of T in {2, 5} (at T = 1 the decays cannot act: the state starts at zero), encoding in
# {direct, two-neuron} and membrane in {uniform, randomized}. About an hour on 2 free cores. Stopped and
# started again, it resumes without rerunning finished runs. A cell counts as solved at a final return of
# 195 (CartPole-v0's bar): at this budget (25k steps) no cell reaches v1's 475.
# Usage: benchmarks/cartpole_sensitivity.sh [OUT]      (default runs/cartpole_sensitivity)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/cartpole_sensitivity}
.venv/bin/spikerl sweep configs/cartpole_dqn_sensitivity.yaml \
    --grid network.neuron.alpha=0.1,0.5,0.9 --grid network.neuron.beta=0.1,0.5,0.9 \
    --variant network.timesteps=2,5 --variant network.encoder=direct,two_neuron \
    --variant network.neuron.randomize=none,normal \
    --seeds 0 --workers 2 --solved-at 195 --out "$OUT" \
    --title "CartPole-v1 spiking DQN, 25k steps: final return over current decay alpha x voltage decay beta"
