#!/usr/bin/env bash
# Train a spiking preset and its ANN twin over several seeds (JOBS runs at a time, default 2, one torch thread
# each), then print the summary table and write the learning-curve plot. Stopped, it resumes: finished runs are
# kept, unfinished ones continue from their last checkpoint (`spikerl train --resume`).
#
# Usage: benchmarks/compare_snn_ann.sh PRESET_STEM STEPS OUT_DIR SEED [SEED ...] [-- OVERRIDE ...]
# Example (docs/results.md): benchmarks/compare_snn_ann.sh halfcheetah_td3 100000 runs/halfcheetah-100k 0 1
set -euo pipefail
cd "$(dirname "$0")/.."
stem=$1 steps=$2 out=$3
shift 3
seeds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
overrides=("$@")
spikerl=${SPIKERL:-.venv/bin/spikerl}
mkdir -p "$out"
jobs_list=()
for kind in snn ann; do
    for seed in "${seeds[@]}"; do
        jobs_list+=("$kind $seed")
    done
done
run_one() {
    local kind=$1 seed=$2
    local dir="$out/$kind-s$seed"
    [ -f "$dir/final_eval.json" ] && return 0
    if [ -f "$dir/config.yaml" ]; then
        "$spikerl" train --resume "$dir" >> "$out/$kind-s$seed.log" 2>&1
        return
    fi
    rm -rf "$dir"
    "$spikerl" train "configs/${stem}_${kind}.yaml" "total_steps=$steps" "seed=$seed" threads=1 progress=false \
        "run_dir=$dir" "${overrides[@]}" > "$out/$kind-s$seed.log" 2>&1
}
running=0
for job in "${jobs_list[@]}"; do
    run_one $job &
    running=$((running + 1))
    if [ "$running" -ge "${JOBS:-2}" ]; then wait -n; running=$((running - 1)); fi
done
wait
runs=(); for job in "${jobs_list[@]}"; do set -- $job; runs+=("$out/$1-s$2"); done  # the run folders, not their logs
"$spikerl" summary "${runs[@]}" | tee "$out/summary.md"
"$spikerl" plot "${runs[@]}" -o "$out/curves.png" --title "${stem}: spiking vs ANN twin, $steps steps"
