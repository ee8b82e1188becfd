#!/usr/bin/env bash
# The CartPole sensitivity sweep of docs/sensitivity.md (8 variants x 3 x 3 alpha-beta grid x 1 seed, 25k
# steps; benchmarks/cartpole_sensitivity.sh) trained twice, side by side in one invocation: as populations
# (`spikerl sweep --population`: the runs that share shapes, here T and the encoder, train in lockstep in one
# process each) and as separate processes (one run per process), --workers 2 both. Prints both wall times,
# their ratio, and whether the two results.csv agree. Stopped, it resumes: each sweep skips finished runs
# (the wall time then covers only the last invocation; each run's own time is in results.csv).
# Usage: benchmarks/population_sweep.sh [OUT] [EXTRA OVERRIDES...]     (default OUT runs/population_sweep)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/population_sweep}; shift $(( $# > 0 ? 1 : 0 ))
spikerl=${SPIKERL:-.venv/bin/spikerl}
sweep=(configs/cartpole_dqn_sensitivity.yaml "$@"
       --grid network.neuron.alpha=0.1,0.5,0.9 --grid network.neuron.beta=0.1,0.5,0.9
       --variant network.timesteps=2,5 --variant network.encoder=direct,two_neuron
       --variant network.neuron.randomize=none,normal --seeds 0 --workers 2 --solved-at 195)
mkdir -p "$OUT"
for mode in population separate; do
    flag=(); [ "$mode" = population ] && flag=(--population)
    start=$(date +%s.%N)
    "$spikerl" sweep "${sweep[@]}" ${flag[@]+"${flag[@]}"} --out "$OUT/$mode" > "$OUT/$mode.log" 2>&1 ||
        { tail -n 3 "$OUT/$mode.log" >&2; exit 1; }  # failed runs: their returns would compare as equal
    end=$(date +%s.%N)
    python3 -c "print(f'$mode: {$end - $start:.0f} s')" | tee "$OUT/$mode.wall"
done
python3 - "$OUT" <<'PY'
import csv, sys
out = sys.argv[1]
wall = {m: float(open(f"{out}/{m}.wall").read().split()[1]) for m in ("population", "separate")}
rows = {m: {r["run_dir"]: r for r in csv.DictReader(open(f"{out}/{m}/results.csv"))} for m in wall}
same = sum(rows["population"][k]["final_return"] == rows["separate"][k]["final_return"] for k in rows["separate"])
print(f"separate processes {wall['separate']:.0f} s, populations {wall['population']:.0f} s: "
      f"{wall['separate'] / wall['population']:.1f}x faster; final returns equal in {same} of {len(rows['separate'])} runs")
PY
