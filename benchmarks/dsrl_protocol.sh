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
spikerl=${SPIKERL:-.venv/bin/spikerl}
mkdir -p "$out"
run_one() {
    local preset=$1 seed=$2
    local dir="$out/$preset-s$seed"
    if [ -f "$dir/final_eval.json" ]; then return 0; fi
    if [ -f "$dir/config.yaml" ]; then
        "$spikerl" train --resume "$dir" >> "$out/$preset-s$seed.log" 2>&1
    else
        "$spikerl" train "configs/$preset.yaml" "seed=$seed" threads=1 progress=false checkpoint_every=10000 \
            "run_dir=$dir" > "$out/$preset-s$seed.log" 2>&1
    fi
}
# Background runs ignore Ctrl-C in a script: stop them with it, so that a rerun can resume them.
trap 'kill $(jobs -p) 2> /dev/null; exit 130' INT TERM
running=0 failed=0
for stem in "${stems[@]}"; do
    for kind in snn ann; do
        for seed in "${seeds[@]}"; do
            run_one "${stem}_$kind" "$seed" &
            running=$((running + 1))
            if [ "$running" -ge "${JOBS:-1}" ]; then wait -n || failed=1; running=$((running - 1)); fi
        done
    done
done
while [ "$running" -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
if [ "$failed" -ne 0 ]; then
    echo "some runs failed; their logs are $out/*.log (run this script again to resume them)" >&2
    exit 1
fi
for stem in "${stems[@]}"; do
    runs=()
    for kind in snn ann; do
        for seed in "${seeds[@]}"; do runs+=("$out/${stem}_$kind-s$seed"); done
    done
    "$spikerl" summary "${runs[@]}" | tee "$out/$stem-summary.md"
done
