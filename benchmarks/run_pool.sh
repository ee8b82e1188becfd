# Sourced by the benchmark scripts that train many runs (not run on its own): one place that decides
# whether a run is trained, resumed or kept, and one pool that runs them JOBS at a time.
spikerl=${SPIKERL:-.venv/bin/spikerl}
job_separator=$'\x1f'  # joins a job's fields, so that paths and overrides may hold spaces

# job PRESET SEEDS RUN_DIR [OVERRIDE ...]: one job for run_pool, its fields kept apart as given. SEEDS is one seed
# (a run in RUN_DIR) or a range A:B (seeds A..B-1 trained as one population, `spikerl train --seeds A:B`: their
# folders are RUN_DIR/s<seed>).
job() {
    local IFS=$job_separator
    printf '%s' "$*"
}

# train_or_resume PRESET SEEDS RUN_DIR [OVERRIDE ...]: a finished run is kept, a started one (or population)
# resumes with `spikerl train --resume`, a new one starts (one torch thread); the log is RUN_DIR.log. Meant to run in
# the background: the trainer replaces the shell, so that stopping the job stops the trainer.
train_or_resume() {
    local preset=$1 seeds=$2 dir=$3
    shift 3
    # Two scripts may reach one run: the first to lock its log decides; the other waits, then finds it
    # finished or started. A trainer started by hand holds RUN_DIR/.lock: that is waited for too.
    exec {log_lock}>> "$dir.log"
    if ! flock -n "$log_lock"; then
        echo "waiting for another script that is training $dir" >&2
        flock "$log_lock"
    fi
    if [ -f "$dir/.lock" ] && ! flock -n "$dir/.lock" true; then
        echo "waiting for the process that is training $dir" >&2
        flock "$dir/.lock" true
    fi
    local runs=("$dir") seeding=("seed=$seeds") marker=config.yaml seed
    if [[ $seeds == *:* ]]; then  # a population: one folder per agent
        runs=() seeding=(--seeds "$seeds") marker=population.yaml
        for ((seed = ${seeds%%:*}; seed < ${seeds##*:}; seed++)); do runs+=("$dir/s$seed"); done
    fi
    local run finished=1 started=1
    for run in "${runs[@]}"; do
        [ -f "$run/final_eval.json" ] || finished=0
        [ -f "$run/config.yaml" ] || started=0  # a population killed before writing them all starts again
    done
    [ "$finished" = 1 ] && return 0
    if [ "$started" = 1 ] && [ -f "$dir/$marker" ]; then
        exec "$spikerl" train --resume "$dir" >> "$dir.log" 2>&1
    fi
    if compgen -G "$dir/*/final_eval.json" > /dev/null; then  # never delete finished runs to start again
        echo "$dir holds finished runs but is not the run or population this job trains; move it away" >&2
        return 1
    fi
    rm -rf "$dir"
    exec "$spikerl" train "configs/$preset.yaml" "${seeding[@]}" threads=1 progress=false "run_dir=$dir" "$@" \
        > "$dir.log" 2>&1
}

# run_pool JOB ...: each JOB made by `job`, run by train_or_resume JOBS at a time (default 2) in the order
# given, in the background. Assumes the caller has no background jobs of its own. Fails, after every job
# has ended, if any failed.
run_pool() {
    # Ctrl-C or a kill stops the trainers too, so that a rerun can resume them.
    trap 'kill $(jobs -p) 2> /dev/null; exit 130' INT TERM
    local running=0 failed=0 job fields
    for job in "$@"; do
        IFS=$job_separator read -r -a fields <<< "$job"
        train_or_resume "${fields[@]}" < /dev/null &
        running=$((running + 1))
        if [ "$running" -ge "${JOBS:-2}" ]; then wait -n || failed=1; running=$((running - 1)); fi
    done
    while [ "$running" -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
    trap - INT TERM
    if [ "$failed" -ne 0 ]; then
        echo "some runs failed; see the .log beside each run folder (run this script again to resume them)" >&2
        return 1
    fi
}
