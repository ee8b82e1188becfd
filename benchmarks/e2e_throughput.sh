#!/usr/bin/env bash
# End-to-end training throughput: a spiking preset per backend against its ANN twin, the same code and
# settings, each spiking run beside one ANN run at the same time (one thread and one core each), then the
# ratio of environment steps per second from each run's final_eval.json. `auto` is the preset as shipped
# (no backend override; the resolved backend is printed); `reference` is the old default. PRESET (default
# halfcheetah_td3) picks configs/${PRESET}_{snn,ann}.yaml, e.g. PRESET=halfcheetah_ppo with STEPS 20480 (PPO's rate
# is held, not annealed; an override ppo.anneal_lr=true anneals it over the short run).
# Usage: benchmarks/e2e_throughput.sh [OUT] [STEPS] [BACKEND ...] [-- OVERRIDE ...]
#        (default runs/e2e 3000 auto native reference; overrides go to both runs, e.g. -- device=cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/e2e}; STEPS=${2:-3000}; shift $(( $# > 2 ? 2 : $# )) || true
BACKENDS=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do BACKENDS+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
[ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(auto native reference)
spikerl=${SPIKERL:-.venv/bin/spikerl}
PRESET=${PRESET:-halfcheetah_td3}
early=(); case "$PRESET" in
    *_td3|*_sac) early=("${PRESET##*_}.learning_starts=100") ;;  # updates from early on
    # a short run would anneal the rate to zero over its own length, and a spiking policy then trains more epochs
    # before its KL stop than in most of a long run: hold the rate, as a long run's first part has it
    *_ppo) early=(ppo.anneal_lr=false) ;;
esac
common=("total_steps=$STEPS" ${early[@]+"${early[@]}"} eval.every=0 eval.final_episodes=1 checkpoint_every=0
        threads=1 progress=false ${EXTRA[@]+"${EXTRA[@]}"})
rm -rf "$OUT"; mkdir -p "$OUT"
for backend in "${BACKENDS[@]}"; do
    choice=(); [ "$backend" = auto ] || choice=("network.backend=$backend")
    "$spikerl" train "configs/${PRESET}_snn.yaml" "${common[@]}" ${choice[@]+"${choice[@]}"} \
        "run_dir=$OUT/snn-$backend" > "$OUT/snn-$backend.log" 2>&1 &
    "$spikerl" train "configs/${PRESET}_ann.yaml" "${common[@]}" "run_dir=$OUT/ann-beside-$backend" \
        > "$OUT/ann-beside-$backend.log" 2>&1 &
    wait
    "${spikerl%spikerl}python" - "$OUT" "$backend" <<'PY'
import json, sys
out, backend = sys.argv[1], sys.argv[2]
snn = json.load(open(f"{out}/snn-{backend}/final_eval.json"))
ann = json.load(open(f"{out}/ann-beside-{backend}/final_eval.json"))
used = snn["backends"]["actor"]
print(f"{out}: spiking actor, backend {backend} ({used} on {snn['device']}): {snn['steps_per_second']:.1f} steps/s; "
      f"ANN actor beside it: {ann['steps_per_second']:.1f} steps/s; ratio {snn['steps_per_second'] / ann['steps_per_second']:.2f}")
PY
done
