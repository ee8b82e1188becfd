#!/usr/bin/env bash
# End-to-end training throughput: spiking TD3 (per backend) against its ANN twin on HalfCheetah-v5,
# the same code and settings, run at the same time (one thread and one core each), then the ratio
# of environment steps per second from each run's final_eval.json.
# Usage: benchmarks/e2e_throughput.sh [OUT] [STEPS] [BACKEND ...]   (default runs/e2e 3000 native fused)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/e2e}; STEPS=${2:-3000}; shift $(( $# > 2 ? 2 : $# )) || true
BACKENDS=("$@"); [ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(native fused)
spikerl=${SPIKERL:-.venv/bin/spikerl}
common=("total_steps=$STEPS" td3.learning_starts=100 eval.every=0 eval.final_episodes=1 checkpoint_every=0
        threads=1 progress=false)
rm -rf "$OUT"; mkdir -p "$OUT"
for backend in "${BACKENDS[@]}"; do
    # One spiking run beside one ANN run, so both see the same machine load.
    inference=$(case "$backend" in native|compiled) echo "$backend" ;; *) echo fast ;; esac)
    "$spikerl" train configs/halfcheetah_td3_snn.yaml "${common[@]}" "network.backend=$backend" \
        "network.inference=$inference" "run_dir=$OUT/snn-$backend" > "$OUT/snn-$backend.log" 2>&1 &
    "$spikerl" train configs/halfcheetah_td3_ann.yaml "${common[@]}" "run_dir=$OUT/ann-beside-$backend" \
        > "$OUT/ann-beside-$backend.log" 2>&1 &
    wait
    "${spikerl%spikerl}python" - "$OUT" "$backend" <<'PY'
import json, sys
out, backend = sys.argv[1], sys.argv[2]
snn = json.load(open(f"{out}/snn-{backend}/final_eval.json"))["steps_per_second"]
ann = json.load(open(f"{out}/ann-beside-{backend}/final_eval.json"))["steps_per_second"]
print(f"spiking actor, backend {backend}: {snn:.1f} steps/s; ANN actor beside it: {ann:.1f} steps/s; "
      f"ratio {snn / ann:.2f}")
PY
done
