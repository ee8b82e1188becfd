#!/usr/bin/env bash
# The conclusive CartPole-v1 sensitivity study of docs/sensitivity.md: the spiking DQN of
# configs/cartpole_dqn_study.yaml for T in {2, 5, 8} x encoding {direct, two-neuron} x membrane {uniform,
# randomized} over a 3 x 3 alpha x beta grid, 5 seeds per cell (540 runs), trained as populations (one per
# T and encoding: 90 agents in lockstep each), two at a time, then the statistics and the paper's three claims
# (benchmarks/sensitivity_analysis.py) into OUT/analysis.md. Stopped, it resumes (populations from their
# checkpoints). With --storage URL appended, several machines share it.
# Usage: benchmarks/sensitivity_study.sh [OUT] [EXTRA SWEEP ARGUMENTS...]   (default OUT runs/sensitivity_study)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/sensitivity_study}; shift $(( $# > 0 ? 1 : 0 ))
spikerl=${SPIKERL:-.venv/bin/spikerl}
"$spikerl" sweep configs/cartpole_dqn_study.yaml \
    --grid network.neuron.alpha=0.1,0.5,0.9 --grid network.neuron.beta=0.1,0.5,0.9 \
    --variant network.timesteps=2,5,8 --variant network.encoder=direct,two_neuron \
    --variant network.neuron.randomize=none,normal \
    --seeds 0,1,2,3,4 --workers 2 --population --solved-at 475 --out "$OUT" "$@" \
    --title "CartPole-v1 spiking DQN, 50k steps, 5 seeds: mean final return over alpha x beta"
"${spikerl%spikerl}python" benchmarks/sensitivity_analysis.py "$OUT" | tee "$OUT/analysis.md"
