#!/usr/bin/env bash
# Quick start: set up, train a spiking DQN on CartPole-v1 until solved, print its evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
run_dir="runs/quickstart-cartpole-$(date +%Y%m%d-%H%M%S)"
.venv/bin/spikerl train configs/cartpole_dqn_quickstart.yaml "run_dir=$run_dir" "$@"
.venv/bin/spikerl eval "$run_dir" --episodes 20 -o "$run_dir/eval.json" >/dev/null
.venv/bin/python - "$run_dir/eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"spikerl eval: {r['episodes']} deterministic episodes of {r['env_id']}: "
      f"mean return {r['mean_return']:.1f} +- {r['std_return']:.1f} (min {r['min_return']:.0f}, max {r['max_return']:.0f})")
print("solved (mean >= 475)" if r["mean_return"] >= 475 else "not solved (mean < 475)")
PY
