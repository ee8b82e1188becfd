"""A sweep shared by several processes or machines through an Optuna storage (`spikerl sweep ... --storage URL`).

The sweep's units of work (each run, or with --population each population of runs) are queued as
trials of an Optuna study named after the sweep (`enqueue_trial`, one per unit), and the storage
hands each waiting trial to exactly one worker. Every worker, on any machine, loops: mark failed
the trials of dead workers (`storage.fail_stale`: a vanished process on this host at once, a silent
heartbeat elsewhere), queue again every unit that is neither completed, held nor waiting, take the
next trial, train its unit as a child process, and complete the trial. A unit whose worker died
resumes from the run folders' checkpoints where the machines share the sweep folder (a network file
system), or trains again where they do not. Two workers that queue the same unit at the same moment
leave two trials for it; the later one sees the earlier and fails itself before training, so each
unit is completed exactly once.

A unit that fails by its own error (its child exits non-zero) is queued once more; after a second such
failure the study gives up on it, so that no machine retries a broken run forever. Starting the sweep
again gives every unit given up so far one more round (the study records from which trial on its
failures count, `retry_after_<unit>`), as running a local sweep again retries its failed runs.

The study also keeps the base_config.yaml of the machine that created it; a machine whose own differs in a
setting some cell reads is refused with one line before it trains, so every cell trains from the same settings.
"""

from __future__ import annotations

import hashlib
import threading
import time

import yaml

from spikerl.errors import SpikerlError
from spikerl.tune.storage import create_or_join, fail_stale, open_storage, redact, worker_identity
from spikerl.tune.sweep import status_of


class heartbeat:
    """Record the trial's heartbeat every `interval` seconds while a unit trains (a database storage fails
    the trials of workers whose heartbeat stops; `study.optimize` does this itself, ask and tell do not)."""

    def __init__(self, storage, trial_id: int, interval: int):
        from optuna.storages import BaseStorage

        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.beats = hasattr(storage, "record_heartbeat") and isinstance(storage, BaseStorage) \
            and getattr(storage, "heartbeat_interval", None)
        self.stop = threading.Event()

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a database hiccup: the next beat tries again (4 misses fail the trial)
                pass

    def __enter__(self):
        if self.beats:
            self.storage.record_heartbeat(self.trial_id)
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.beats:
            self.thread.join()


def fail_unowned(study, grace_s: float, log) -> None:
    """Fail RUNNING trials that never recorded their worker and started more than `grace_s` ago: a worker
    killed between taking a trial and naming itself, which neither dead-worker check can see."""
    from datetime import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now = datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start
        if "worker" in trial.user_attrs or started is None or (now - started).total_seconds() < grace_s:
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            log(f"trial {trial.number}: taken by a worker that never named itself; marked failed")
        except UpdateFinishedTrialError:
            pass


def study_name(sweep, population: bool) -> str:
    definition = yaml.safe_dump({"sweep": sweep.out.name, "spec": sweep.spec.__dict__ | {"solved_at": None},
                                 "population": population}, sort_keys=True)
    return f"sweep-{sweep.out.name}-{hashlib.sha256(definition.encode()).hexdigest()[:12]}"


def agree_on_base_config(stored: str | None, sweep) -> None:
    """Every machine's cells train from the settings the sweep started with: the machine that created the study
    stored its base_config.yaml there (`stored`, None where this machine did), and a machine whose own differs (another
    preset file or spikerl version, each OUT folder writing its own at its first start) in a setting some cell
    reads is refused before it trains anything. A setting no cell reads (such as a default changed between
    versions, of a part no cell uses) is no difference; one that a cell's value switches on is."""
    from spikerl.config import differing_settings, flatten_settings, settings_some_run_reads
    from spikerl.rl.population import is_bookkeeping
    from spikerl.tune.sweep import cell_overrides

    if stored is None:
        return
    theirs, ours = flatten_settings(yaml.safe_load(stored)), flatten_settings(yaml.safe_load(sweep.base.read_text()))
    each_cell_sets = {*sweep.spec.grid, *sweep.spec.variants}  # (a base made from a started run holds its cell's)
    cells = [{**variant, **point} for variant, point in cell_overrides(sweep.spec)]
    # by either side's cells: a setting only one side has (a newer version's, an env_kwargs key) counts
    read = settings_some_run_reads(theirs, cells) | settings_some_run_reads(ours, cells)
    differ = sorted(k for k in differing_settings(theirs, ours)
                    if k in read and k not in each_cell_sets and not is_bookkeeping(k))
    if differ:
        raise SpikerlError(f"{sweep.base} differs from the base config this shared sweep started with (in "
                           f"{', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}); give every machine the "
                           "same config file and spikerl version")


def unit_of(trial) -> int | None:
    fixed = trial.params if "unit" in trial.params else trial.system_attrs.get("fixed_params", {})
    return fixed.get("unit")


def given_up(study, trials) -> dict[int, str]:
    """The units the study gave up on, with their last error: two failures by their own error since their
    last retry mark, and no completed trial."""
    from optuna.trial import TrialState

    retry_after = {int(key.removeprefix("retry_after_")): number for key, number in study.user_attrs.items()
                   if key.startswith("retry_after_")}
    completed = {unit_of(t) for t in trials if t.state == TrialState.COMPLETE}
    errors: dict[int, list[str]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        unit = unit_of(t)
        if t.state == TrialState.FAIL and "error" in t.user_attrs and t.number > retry_after.get(unit, -1):
            errors.setdefault(unit, []).append(t.user_attrs["error"])
    return {unit: errs[-1] for unit, errs in errors.items() if len(errs) >= 2 and unit not in completed}


def run_shared(sweep, storage_url: str, workers: int, heartbeat_s: int, population: bool,
               log=print) -> list[tuple[str, str]]:
    """Train units of the sweep until the study holds every one as completed or given up; return those it
    gave up on (name, error)."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    units = sweep.units(population)
    storage = open_storage(storage_url, sweep.out, heartbeat_s)
    name = study_name(sweep, population)
    sampler = optuna.samplers.RandomSampler(seed=0)  # only for trials nobody queued (see `worker`)
    try:
        study, stored = create_or_join("base_config", sweep.base.read_text(), study_name=name, storage=storage,
                                       sampler=sampler)
    except Exception as exc:  # a storage that refuses the study (permissions, a full disk)
        raise SpikerlError(f"cannot open sweep study {name} in {redact(storage_url)}: {exc}") from None
    agree_on_base_config(stored, sweep)
    log(f"sweep {sweep.out}: {len(units)} {'populations' if population else 'runs'} shared through study {name} "
        f"in {redact(storage_url)}, {workers} worker(s) here")
    trials = study.get_trials(deepcopy=False)
    for unit in given_up(study, trials):  # started again: one more round for what the study gave up on
        failures = [t.number for t in trials if unit_of(t) == unit and t.state == TrialState.FAIL]
        study.set_user_attr(f"retry_after_{unit}", max(failures))
        log(f"{units[unit][0]}: given up by an earlier start of this sweep; trying it again")
    lock = threading.Lock()

    def claimed() -> tuple[set[int], set[int], set[int]]:
        """Units completed or given up, held now, and queued."""
        trials = study.get_trials(deepcopy=False)
        done = {unit_of(t) for t in trials if t.state == TrialState.COMPLETE} | set(given_up(study, trials))
        running = {unit_of(t) for t in trials if t.state == TrialState.RUNNING}
        waiting = {unit_of(t) for t in trials if t.state == TrialState.WAITING}
        return done, running, waiting

    def worker() -> None:
        while True:
            with lock:
                fail_stale(study, log)
                fail_unowned(study, 4 * heartbeat_s, log)
                done, running, waiting = claimed()
                if len(done) == len(units):
                    return
                for unit in sorted(set(range(len(units))) - done - running - waiting):
                    study.enqueue_trial({"unit": unit})  # new, or its worker died or failed: queue it (again)
                    waiting.add(unit)
                trial = study.ask() if waiting - running - done else None  # takes the oldest queued trial
                if trial is not None:
                    trial.set_user_attr("worker", worker_identity())
                    unit = trial.suggest_categorical("unit", list(range(len(units))))
            if trial is None:
                time.sleep(min(heartbeat_s, 2))  # every unit left is held by a live worker: wait for them
                continue
            try:
                train(trial, unit)
            except Exception:  # the storage or the disk failed: hand the unit back (untrained), stop this worker
                try:
                    study.tell(trial, state=TrialState.FAIL)
                except Exception:
                    pass
                raise

    def train(trial, unit: int) -> None:
        trials = study.get_trials(deepcopy=False)
        queued = any(t.number == trial.number and "fixed_params" in t.system_attrs for t in trials)
        earlier = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.COMPLETE)
                   and unit_of(t) == unit and t.number < trial.number]
        # A trial nobody queued (the sampler's, when another worker took the last queued one), a unit queued
        # twice, or one given up while it waited: the trial steps back untrained.
        if not queued or earlier or unit in given_up(study, trials):
            study.tell(trial, state=TrialState.FAIL)
            return
        unit_name, jobs = units[unit]
        with heartbeat(storage, trial._trial_id, heartbeat_s):
            error = sweep.train_unit(unit_name, jobs, population)
        # Done when every run finished or diverged (a diverged run is a result, not retried).
        complete = all(status_of(job.run_dir) in ("done", "diverged") for job in jobs)
        try:
            trial.set_user_attr("result", sweep.describe(unit_name, jobs))
            if not complete:
                trial.set_user_attr("error", error or "not every run finished")
            study.tell(trial, 0.0 if complete else None, state=TrialState.COMPLETE if complete else TrialState.FAIL)
        except UpdateFinishedTrialError:  # another worker took it for dead (missed heartbeats) meanwhile
            log(f"{unit_name}: trained here after another worker had given it up")
        log(f"{sweep.describe(unit_name, jobs)}" + (f" ({error})" if error and not complete else ""))

    stopped: list[Exception] = []

    def guarded_worker() -> None:
        try:
            worker()
        except Exception as exc:
            stopped.append(exc)

    threads = [threading.Thread(target=guarded_worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sweep.write_results()
    if stopped:  # the unit it held went back to the study
        try:
            finished = len(claimed()[0]) == len(units)
        except Exception:  # the storage itself is what failed
            finished = False
        if not finished:
            raise SpikerlError(f"a worker of the shared sweep stopped: {stopped[0]}; the study hands its units to "
                               "the other processes, and starting the sweep again here continues")
        log(f"a worker of the shared sweep stopped ({stopped[0]}); the others finished every unit")
    return [(units[unit][0], error) for unit, error in sorted(given_up(study, study.get_trials(deepcopy=False)).items())]
