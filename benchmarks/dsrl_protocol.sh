#!/usr/bin/env bash
# The paper's discrete-task protocol, as its released code (dsrl) measured it: the presets of CartPole-v0
# and Acrobot-v1, spiking and ANN twin, 500 training episodes per run, 5 seeds; per run the best
# 100-episode average of training returns (dsrl's figure) beside the final deterministic evaluation.
# Runs go one after another (one torch thread; JOBS=2 runs two at a time). A stopped script resumes
# where it stopped: finished runs are kept, a started one continues with `spikerl train --resume`.
#
# Usage: benchmarks/dsrl_protocol.sh [OUT_DIR] [PRESET_STEM ...]   (default: runs/dsrl, cartpole_dqn acrobot_dqn)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/dsrl}
shift || true
stems=("$@")
[ ${#stems[@]} -eq 0 ] && stems=(cartpole_dqn acrobot_dqn)
seeds=(${SEEDS:-0 1 2 3 4})
source benchmarks/run_pool.sh
mkdir -p "$out"
jobs_list=()
for stem in "${stems[@]}"; do
    for kind in snn ann; do
        for seed in "${seeds[@]}"; do
            jobs_list+=("$(job "${stem}_$kind" "$seed" "$out/${stem}_$kind-s$seed" checkpoint_every=10000)")
        done
    done
done
JOBS=${JOBS:-1} run_pool "${jobs_list[@]}"
for stem in "${stems[@]}"; do
    runs=()
    for kind in snn ann; do
        for seed in "${seeds[@]}"; do runs+=("$out/${stem}_$kind-s$seed"); done
    done
    "$spikerl" summary "${runs[@]}" | tee "$out/$stem-summary.md"
done
