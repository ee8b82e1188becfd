# Sourced by the benchmark scripts that train many runs (not run on its own): one place that decides
# whether a run is trained, resumed or kept, and one pool that runs them JOBS at a time.
spikerl=${SPIKERL:-.venv/bin/spikerl}

# train_or_resume PRESET SEED RUN_DIR [OVERRIDE ...]: a finished run is kept, a started one resumes with
# `spikerl train --resume`, a new one starts (one torch thread); the log is RUN_DIR.log. A run that another
# process is training right now (its folder's lock is held) is waited for, not trained twice.
train_or_resume() {
    local preset=$1 seed=$2 dir=$3
    shift 3
    if [ -f "$dir/.lock" ] && command -v flock > /dev/null; then flock "$dir/.lock" true; fi
    [ -f "$dir/final_eval.json" ] && return 0
    if [ -f "$dir/config.yaml" ]; then
        "$spikerl" train --resume "$dir" >> "$dir.log" 2>&1
    else
        rm -rf "$dir"
        "$spikerl" train "configs/$preset.yaml" "seed=$seed" threads=1 progress=false "run_dir=$dir" "$@" \
            > "$dir.log" 2>&1
    fi
}

# run_pool JOB ...: each JOB is one string "PRESET SEED RUN_DIR [OVERRIDE ...]" for train_or_resume, run JOBS
# at a time (default 2) in the order given. Fails, after every job has ended, if any failed.
run_pool() {
    # Background runs ignore Ctrl-C in a script: stop them with it, so that a rerun can resume them.
    trap 'kill $(jobs -p) 2> /dev/null; exit 130' INT TERM
    local running=0 failed=0 job
    for job in "$@"; do
        train_or_resume $job < /dev/null &
        running=$((running + 1))
        if [ "$running" -ge "${JOBS:-2}" ]; then wait -n || failed=1; running=$((running - 1)); fi
    done
    while [ "$running" -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
    if [ "$failed" -ne 0 ]; then
        echo "some runs failed; see the .log beside each run folder (run this script again to resume them)" >&2
        return 1
    fi
}
