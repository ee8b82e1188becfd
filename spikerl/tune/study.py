"""Optuna searches over spiking and RL hyperparameters: `spikerl tune`.

    spikerl tune CONFIG [overrides] --space SPACE.yaml --trials 50 --seeds 0,1 --workers 2 --out runs/tune
    spikerl tune CONFIG ... --storage postgresql://user:pw@host/db --study NAME     (on every machine)

Each trial draws a point of the space (TPE), then trains one ordinary run per seed, in this process,
under OUT/trials/; its value is the mean final evaluation return over the seeds (and, with
`--objective return,spikes`, the mean spikes per decision of the final policies, minimized). With
one objective, every periodic evaluation is reported to a median pruner (seed i's evaluation at
step s is reported as step i x total_steps + s, so trials are compared on the same seed and step).
`--population` trains a trial's seeds as one population in lockstep (`spikerl.rl.population`; the
same files per seed, in less time); the pruner then sees, at each evaluation step, the mean over the
seeds (a seed that stopped at `eval.stop_at_return` counts with its last evaluation).

Storage: a local Optuna journal file (OUT/study.journal) by default: no server, any number of
local processes. A database URL (postgresql://...) lets any number of machines join one study,
each running the same command; the study remembers its base config, space, seeds and objectives
and refuses a worker that brings others (of the base config, the settings some trial reads). A
worker that dies leaves its trial failed and the study goes on: local dead workers are found through
their process ids, remote ones through Optuna's heartbeat (database storage only). Failed trials do
not count towards --trials.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import socket
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spikerl.errors import SpikerlError, TrainingDiverged
from spikerl.fileio import atomic_write_text
from spikerl.tune.space import (
    Param,
    overrides_from_params,
    space_from_data,
    space_to_data,
    suggest,
)
from spikerl.tune.storage import create_or_join, fail_stale, open_storage, redact, worker_identity

OBJECTIVES = {"return": "maximize", "spikes": "minimize"}
SPEC_ATTR = "spikerl_spec"  # study user attribute holding what every worker must agree on


@dataclass
class TuneSpec:
    config: str
    overrides: list[str]
    space: list[Param]
    seeds: list[int] = field(default_factory=lambda: [0])
    objectives: list[str] = field(default_factory=lambda: ["return"])
    pruner: str = "median"  # median | none
    prune_after: int = 4  # completed trials before the median pruner starts to prune
    spike_episodes: int = 2  # evaluation episodes for counting spikes (objective "spikes")
    population: bool = False  # a trial's seeds as one population (the pruner then sees their mean per step)

    def base_config(self) -> dict:
        """The resolved config every trial starts from, without the per-run fields."""
        from spikerl.config import config_to_dict, load_config

        data = config_to_dict(load_config(self.config, self.overrides))
        data.update(seed=0, run_dir=None, threads=None, progress=True)
        if not data["env_kwargs"]:  # studies made before the option existed stay joinable
            del data["env_kwargs"]
        return data

    def agreement(self) -> dict:
        """What two workers of one study must share (the config file's path may differ between machines)."""
        agreement = {"base_config": self.base_config(), "space": space_to_data(self.space), "seeds": self.seeds,
                     "objectives": self.objectives, "pruner": self.pruner, "prune_after": self.prune_after}
        if self.population:  # only then: studies made before the option existed stay joinable
            agreement["population"] = True
        return agreement


# ----------------------------------------------------------------------------- the study


def open_study(spec: TuneSpec, storage, name: str, sampler_seed: int | None):
    """Create the study, or join it after checking it was made with the same base config and space."""
    import optuna

    directions = [OBJECTIVES[o] for o in spec.objectives]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning: multivariate TPE, stable in use since Optuna 2.2
        # constant_liar: parallel workers do not all draw next to the same running trial.
        sampler = optuna.samplers.TPESampler(seed=sampler_seed, constant_liar=True, multivariate=True)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=spec.prune_after, n_warmup_steps=0) if spec.pruner == "median"
              else optuna.pruners.NopPruner())
    agreement = json.loads(json.dumps(spec.agreement()))  # as it reads back from storage
    try:
        study, stored = create_or_join(SPEC_ATTR, agreement, study_name=name, storage=storage, directions=directions,
                                       sampler=sampler, pruner=pruner)
    except ValueError as exc:  # an existing study with other directions
        raise SpikerlError(f"study {name!r}: {exc}") from None
    if stored is not None and (was := _as_compared(stored)) != (now := _as_compared(agreement)):
        differ = [k for k in now if was.get(k) != now[k]]
        raise SpikerlError(f"study {name!r} was created with another {' and '.join(differ)}; use the same config, "
                           "overrides, search space, seeds and objectives, or another --study name")
    return study


_MOST_CHOICE_COMBINATIONS = 4096  # beyond this, every base setting counts as read


def _as_compared(agreement: dict) -> dict:
    """What two workers' agreements must share: of the base config, the settings some trial reads, so a study
    stays joinable after a default changes in a setting no trial reads (such as the population encoder's std
    where no trial has one). A setting a choice in the space switches on counts: with the encoder searched,
    the population encoder's std is read by the trials that draw it."""
    from spikerl.config import flatten_settings, settings_some_run_reads

    base = flatten_settings(agreement.get("base_config", {}))
    choices = {p.key: p.choices for p in space_from_data(agreement.get("space", [])) if p.type == "choice"}
    if math.prod(len(c) for c in choices.values()) > _MOST_CHOICE_COMBINATIONS:
        return agreement
    read = settings_some_run_reads(base, (dict(zip(choices, c)) for c in itertools.product(*choices.values())))
    return {**agreement, "base_config": {k: v for k, v in base.items() if k in read}}


# ----------------------------------------------------------------------------- the objective


class TrialRunner:
    """Trains one trial: a run per seed, reports evaluations to the pruner, returns the objective values."""

    def __init__(self, spec: TuneSpec, out: Path, log=print):
        from spikerl.config import load_config

        self.spec, self.out, self.log = spec, out, log
        base = load_config(spec.config, spec.overrides)
        self.n_layers, self.total_steps = len(base.network.hidden), base.total_steps

    def trial_dir(self, number: int) -> Path:
        path = self.out / "trials" / f"t{number:04d}"
        if path.exists():  # left by an earlier study of the same name (say, a deleted journal): keep it
            path = path.with_name(f"{path.name}-{socket.gethostname()}-{os.getpid()}")
        return path

    def __call__(self, trial) -> float | tuple[float, float]:
        import numpy as np

        from spikerl.config import load_config

        trial.set_user_attr("worker", worker_identity())
        overrides = suggest(trial, self.spec.space, self.n_layers)
        folder = self.trial_dir(trial.number)
        trial.set_user_attr("run_folder", str(folder.resolve()))
        cfgs = [load_config(self.spec.config, [*self.spec.overrides, *overrides, f"seed={seed}",
                                               f"run_dir={folder / f's{seed}'}", "threads=1", "progress=false"])
                for seed in self.spec.seeds]
        results = self._train_population(trial, cfgs, folder) if self.spec.population else self._train_runs(trial, cfgs)
        returns, spikes = [], []
        for cfg, result in zip(cfgs, results):
            returns.append(float(result["mean_return"]))
            trial.set_user_attr(f"return_seed{cfg.seed}", returns[-1])
            if "spikes" in self.spec.objectives:
                spikes.append(self._spikes(Path(cfg.run_dir), cfg.eval.seed))
                trial.set_user_attr(f"spikes_seed{cfg.seed}", spikes[-1])
        values = {"return": float(np.mean(returns)), "spikes": float(np.mean(spikes)) if spikes else math.nan}
        return tuple(values[o] for o in self.spec.objectives) if len(self.spec.objectives) > 1 else values["return"]

    @property
    def _pruning(self) -> bool:
        return len(self.spec.objectives) == 1 and self.spec.pruner != "none"

    def _train_runs(self, trial, cfgs) -> list[dict]:
        """One run per seed, one after the other; seed i's evaluation at step s reaches the pruner as step
        i x total_steps + s."""
        from spikerl.rl import train_run
        from spikerl.rl.run import Run

        results = []
        for index, cfg in enumerate(cfgs):
            run = Run(cfg)
            if self._pruning:
                run.eval_listeners.append(self._reporter(trial, index))
            try:  # the run's own messages go to its folder; the tuner prints one line per trial
                with open(Path(cfg.run_dir).parent / f"s{cfg.seed}.log", "w") as output, \
                        redirect_stdout(output), redirect_stderr(output):
                    results.append(train_run(cfg, run))
            except SpikerlError as exc:
                self._failed(trial, cfg.seed, exc)
            finally:
                run.close()
        return results

    def _train_population(self, trial, cfgs, folder: Path) -> list[dict]:
        """The seeds as one population in `folder` (s<seed>/ per seed, as `spikerl train --seeds` writes)."""
        from spikerl.rl.population import train_population

        listeners = _PopulationReporter(trial, cfgs).listeners() if self._pruning else None
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:  # the population's messages go beside its folder (train_population wants the folder new)
            with open(folder.with_suffix(".log"), "w") as output, redirect_stdout(output), redirect_stderr(output):
                results = train_population(folder, cfgs, eval_listeners=listeners)
        except SpikerlError as exc:
            self._failed(trial, None, exc)
        for cfg, result in zip(cfgs, results):
            if "diverged" in result:
                self._failed(trial, cfg.seed, TrainingDiverged(result["diverged"]))
        return results

    def _failed(self, trial, seed: int | None, exc: SpikerlError) -> None:
        """A seed that diverged prunes the trial; any other error fails it (raised on)."""
        import optuna

        who = "population" if seed is None else f"seed {seed}"
        if not isinstance(exc, TrainingDiverged):
            trial.set_user_attr("error", f"{who}: {exc}")
            raise exc
        trial.set_user_attr("diverged", f"{who}: {exc}")
        self.log(f"trial {trial.number}: {who} diverged")
        raise optuna.TrialPruned(f"{who} diverged") from None

    def _reporter(self, trial, seed_index: int):
        import optuna

        def report(step: int, result: dict) -> None:
            trial.report(float(result["mean_return"]), seed_index * self.total_steps + step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} of seed {self.spec.seeds[seed_index]} "
                                         f"(eval return {result['mean_return']:.1f})")
        return report

    def _spikes(self, run_dir: Path, seed: int) -> float:
        from spikerl.deploy.energy import measure_activity
        from spikerl.rl.evaluate import load_policy

        cfg, policy = load_policy(run_dir)
        report, _, _ = measure_activity(policy, cfg.env_id, self.spec.spike_episodes, seed, env_kwargs=cfg.env_kwargs)
        return report.spikes_per_decision


class _PopulationReporter:
    """A population trial's evaluations for the pruner: at each evaluation step, once every seed evaluated,
    the mean over the seeds (a seed that stopped at `eval.stop_at_return` counts with its last evaluation)."""

    def __init__(self, trial, cfgs):
        self.trial, self.cfgs = trial, cfgs
        self.latest: dict[int, float] = {}
        self.stopped: set[int] = set()
        self.reported: dict[int, set[int]] = {}

    def listeners(self) -> list:
        return [self._listener(k) for k in range(len(self.cfgs))]

    def _listener(self, k: int):
        import optuna

        from spikerl.rl.loop import reached_stop_return

        def report(step: int, result: dict) -> None:
            value = float(result["mean_return"])
            self.latest[k] = value
            seen = self.reported.setdefault(step, set())
            seen.add(k)
            if reached_stop_return(self.cfgs[k], result):  # the loop stops it: no later evaluations
                self.stopped.add(k)
            if len(seen | self.stopped) < len(self.cfgs):
                return
            del self.reported[step]
            mean = sum(self.latest.values()) / len(self.latest)
            self.trial.report(mean, step)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (mean eval return over the seeds {mean:.1f})")
        return report


# ----------------------------------------------------------------------------- workers


def counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}


def run_worker(spec: TuneSpec, study, out: Path, n_trials: int, log=print, poll_s: float = 2.0) -> None:
    """Run trials until the study holds n_trials complete or pruned ones (failed ones are replaced).

    Trials run through `study.optimize`, which beats the heartbeat of database storages while a trial runs.
    """
    from optuna.trial import TrialState

    runner = TrialRunner(spec, out, log)
    errors: list[str] = []

    def report(study, trial) -> None:
        if trial.state == TrialState.COMPLETE:
            errors.clear()
            log(f"trial {trial.number}: " + ", ".join(f"{o} {v:.2f}" for o, v in zip(spec.objectives, trial.values))
                + "; " + ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items()))
        elif trial.state == TrialState.PRUNED:
            log(f"trial {trial.number}: pruned")
        else:
            errors.append(trial.user_attrs.get("error", "see the run folder"))
            log(f"trial {trial.number}: failed: {errors[-1]}")

    while True:
        fail_stale(study, log)
        n = counts(study)
        finished = n["complete"] + n["pruned"]
        if finished >= n_trials:
            return
        if finished + n["running"] >= n_trials:
            time.sleep(poll_s)  # the last trials run elsewhere; stay to replace any whose worker dies
            continue
        # SpikerlError: a drawn combination that cannot train, a full disk: the trial fails, the study goes on.
        study.optimize(runner, n_trials=1, catch=(SpikerlError,), callbacks=[report], gc_after_trial=False)
        if len(errors) >= 3:
            raise SpikerlError(f"three trials in a row failed, the last with: {errors[-1]}")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- results


def best_trial(study, number: int | None = None):
    """The chosen trial, the best one, or (several objectives) the Pareto-optimal one with the highest return."""
    from optuna.trial import TrialState

    if number is not None:
        trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not trials or trials[0].state != TrialState.COMPLETE:
            raise SpikerlError(f"study {study.study_name!r} has no completed trial number {number}")
        return trials[0]
    if not counts(study)["complete"]:
        raise SpikerlError(f"study {study.study_name!r} has no completed trial yet")
    if len(study.directions) == 1:
        return study.best_trial
    return max(study.best_trials, key=lambda t: t.values[0])


def export_preset(study, trial, path: Path) -> Path:
    """The trial's full config as a preset: `spikerl train PATH` retrains it (seed: the study's first seed)."""
    from spikerl.config import config_to_dict, config_with_overrides

    agreement = study.user_attrs[SPEC_ATTR]
    space = space_from_data(agreement["space"])
    n_layers = len(agreement["base_config"]["network"]["hidden"])
    overrides = overrides_from_params(space, trial.params, n_layers)
    # One thread, as the trial ran: the preset then retrains to the trial's own result.
    cfg = config_with_overrides(agreement["base_config"], [*overrides, f"seed={agreement['seeds'][0]}", "threads=1"])
    values = ", ".join(f"{o} {v:.2f}" for o, v in zip(agreement["objectives"], trial.values))
    header = (f"# spikerl tune: study {study.study_name!r}, trial {trial.number} ({values}, mean over seeds "
              f"{agreement['seeds']}).\n# Retrain with: spikerl train {path}\n# Tuned: "
              + "; ".join(overrides) + "\n")
    atomic_write_text(path, header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def write_trials_csv(study, path: Path) -> Path:
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    objectives = study.user_attrs[SPEC_ATTR]["objectives"]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["number", "state", *objectives, *names, "duration_s", "run_folder"])
    for t in trials:
        values = list(t.values) if t.values else [""] * len(objectives)
        duration = round(t.duration.total_seconds(), 1) if t.duration else ""
        writer.writerow([t.number, t.state.name, *values, *[t.params.get(k, "") for k in names], duration,
                         t.user_attrs.get("run_folder", "")])
    atomic_write_text(path, text.getvalue())
    return path


# ----------------------------------------------------------------------------- the whole search


def _worker_process(spec: TuneSpec, storage_url: str | None, name: str, out: str, n_trials: int,
                    heartbeat_s: int, sampler_seed: int | None, index: int) -> None:
    """One local worker (a spawned process): joins the study and runs trials; dies with its parent."""
    import sys

    import optuna
    import torch

    from spikerl.tune.sweep import die_with_parent

    die_with_parent()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)
    prefix = f"[worker {index}] "
    try:
        study = open_study(spec, open_storage(storage_url, Path(out), heartbeat_s), name, sampler_seed)
        run_worker(spec, study, Path(out), n_trials, log=lambda line: print(prefix + line, flush=True))
    except SpikerlError as exc:
        print(f"{prefix}spikerl: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def tune(spec: TuneSpec, storage_url: str | None, name: str, out: Path, n_trials: int, workers: int,
         heartbeat_s: int = 30, sampler_seed: int | None = None, log=print):
    """Run (or join) the study with `workers` local processes until it holds n_trials finished trials."""
    import multiprocessing

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(spec, open_storage(storage_url, out, heartbeat_s), name, sampler_seed)
    n = counts(study)
    log(f"study {name!r} in {redact(storage_url) if storage_url else out / 'study.journal'}: "
        f"{n['complete']} complete, {n['pruned']} pruned, {n['fail']} failed, {n['running']} running; "
        f"aiming at {n_trials} complete or pruned trials with {workers} local worker(s)")
    if workers == 1:
        import torch

        torch.set_num_threads(1)
        run_worker(spec, study, out, n_trials, log)
        return study
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no torch threads or locks inherited
    processes = [context.Process(target=_worker_process, args=(
        spec, storage_url, name, str(out), n_trials, heartbeat_s,
        None if sampler_seed is None else sampler_seed + i, i)) for i in range(workers)]
    for process in processes:
        process.start()
    for i, process in enumerate(processes):
        process.join()
        if process.exitcode != 0:
            log(f"worker {i} ended with exit code {process.exitcode}")
    fail_stale(study, log)
    return study
