#!/usr/bin/env bash
# The MuJoCo PPO table of docs/results.md: configs/{halfcheetah,hopper,walker2d,ant}_ppo_snn.yaml and their
# ANN twins, 1M steps, seeds 0 and 1: 16 agents, trained as 8 populations (a preset's two seeds in lockstep in
# one process, `spikerl train --seeds 0:2`: about 1.5 times the agent-steps per second of two separate runs
# on one core), JOBS populations at a time (default 2, one torch thread each), then one summary table and one
# learning-curve plot per task, and the spiking / ANN ratios against the bar (0.9 on three of four tasks).
# Stopped (a session's end, a kill), run it again: finished populations are kept and unfinished ones resume
# from their last checkpoint, with identical files.
# Usage: benchmarks/ppo_mujoco.sh [OUT] [STEPS] [-- OVERRIDE ...]   (default OUT runs/ppo-mujoco-t8-lsd, STEPS 1000000)
# SEEDS=A:B (default 0:2) trains seeds A..B-1 as each population instead, TASKS (default "halfcheetah hopper
# walker2d ant") a subset, e.g. SEEDS=2:4 TASKS="walker2d ant" for more seeds of two tasks in their own OUT.
# Folders: OUT/<task>/{snn,ann}/s<seed>. OVERRIDEs change the spiking runs only (the ANN twins stay their
# presets), for example the spiking policy, its log-std with it, at 5e-5 without the KL stop:
#     benchmarks/ppo_mujoco.sh runs/ppo-mujoco-plr5e-5 1000000 -- ppo.policy_learning_rate=5e-5 \
#         ppo.log_std_learning_rate=null ppo.policy_target_kl=null
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/run_pool.sh
out=runs/ppo-mujoco-t8-lsd steps=1000000  # a folder per preset version: finished runs are kept as they are
[ $# -gt 0 ] && [ "$1" != "--" ] && { out=$1; shift; }
[ $# -gt 0 ] && [ "$1" != "--" ] && { steps=$1; shift; }
[ "${1:-}" = "--" ] && shift
spiking_overrides=("$@")
seeds=${SEEDS:-0:2}
all_tasks="halfcheetah hopper walker2d ant"
read -r -a tasks <<< "${TASKS:-$all_tasks}"
if ! [[ $seeds =~ ^([0-9]+):([0-9]+)$ ]] || [ "${BASH_REMATCH[2]}" -le "${BASH_REMATCH[1]}" ]; then
    echo "SEEDS must be A:B with A < B (seeds A..B-1), got '$seeds'" >&2; exit 2
fi
for task in "${tasks[@]}"; do
    [[ " $all_tasks " == *" $task "* ]] || { echo "TASKS: unknown task '$task' (one of $all_tasks)" >&2; exit 2; }
done
seed_list=$(seq "${seeds%%:*}" $(( ${seeds##*:} - 1 )))
jobs_list=()
for kind in snn ann; do  # one queue, so no core waits for a task's last population: the slowest (Ant) first
    for task in ant hopper walker2d halfcheetah; do
        [[ " ${tasks[*]} " == *" $task "* ]] || continue
        mkdir -p "$out/$task"
        overrides=("total_steps=$steps")
        [ "$kind" = snn ] && overrides+=("${spiking_overrides[@]}")
        jobs_list+=("$(job "${task}_ppo_$kind" "$seeds" "$out/$task/$kind" "${overrides[@]}")")
    done
done
run_pool "${jobs_list[@]}"
for task in "${tasks[@]}"; do
    runs=()
    for kind in snn ann; do for seed in $seed_list; do runs+=("$out/$task/$kind/s$seed"); done; done
    "$spikerl" summary "${runs[@]}" > "$out/$task/summary.md"
    "$spikerl" plot "${runs[@]}" -o "$out/$task/curves.png" --title "${task}_ppo: spiking vs ANN twin, $steps steps"
    echo "## $task"
    cat "$out/$task/summary.md"
done | tee "$out/summary.md"
# The issue's bar, the spiking mean final evaluation at least 0.9 of the ANN twin's on three of the four tasks
python3 benchmarks/ppo_ratios.py "$out:$seeds" --tasks "${tasks[@]}" | tee -a "$out/summary.md"
