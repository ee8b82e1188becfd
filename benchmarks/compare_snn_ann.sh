#!/usr/bin/env bash
# Train a spiking preset and its ANN twin over several seeds (JOBS runs at a time, default 2, one torch thread
# each), then print the summary table and write the learning-curve plot. Stopped, it resumes: finished runs are
# kept, unfinished ones continue from their last checkpoint (`spikerl train --resume`).
#
# Usage: benchmarks/compare_snn_ann.sh PRESET_STEM STEPS OUT_DIR SEED [SEED ...] [-- OVERRIDE ...]
# Example (docs/results.md): benchmarks/compare_snn_ann.sh halfcheetah_td3 100000 runs/halfcheetah-100k 0 1
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/run_pool.sh
stem=$1 steps=$2 out=$3
shift 3
seeds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
jobs_list=() runs=()
for kind in snn ann; do
    for seed in "${seeds[@]}"; do
        jobs_list+=("$(job "${stem}_$kind" "$seed" "$out/$kind-s$seed" "total_steps=$steps" "$@")")
        runs+=("$out/$kind-s$seed")
    done
done
run_pool "${jobs_list[@]}"
"$spikerl" summary "${runs[@]}" | tee "$out/summary.md"
"$spikerl" plot "${runs[@]}" -o "$out/curves.png" --title "${stem}: spiking vs ANN twin, $steps steps"
