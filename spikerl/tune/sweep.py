"""Sensitivity sweeps: a grid of config values x variants x seeds, each an ordinary training run.

    spikerl sweep CONFIG [overrides] --grid network.neuron.alpha=0.1:0.9:5 --grid network.neuron.beta=0.1:0.9:5 \
        --variant network.timesteps=1,3,5 --variant network.encoder=direct,two_neuron --seeds 0,1 \
        --workers 2 --out runs/sweep --solved-at 475

OUT/
  sweep.yaml          the sweep's definition (a restart must match it)
  base_config.yaml    its config file with its overrides, resolved when the sweep started (in a folder an
                      older spikerl made, from a started run's config): every cell, those a restart starts
                      too, trains from it, so a preset edited or a default changed since then does not
                      split the sweep (a shared sweep's machines must agree on it); delete the folder, or
                      choose another --out, to sweep an edited preset
  runs/<cell>/s<seed> ordinary run folders (`spikerl eval`, `plot`, `export` work on them)
  results.csv         one row per run, rebuilt from the run folders after every finished run
  heatmaps.png        mean final return over the grid, one panel per variant, one colour scale
  summary.md          per variant: share of the grid that solves the task, mean and spread of returns

Every run is a `spikerl train` child process with one thread, `--workers` at a time (with
`--storage URL`, shared with every other process or machine running the same sweep on that storage:
spikerl.tune.shared_sweep); with
`--population`, the runs that share every tensor shape and shared setting (spikerl.rl.population)
train as one population per child process instead (OUT/populations/p<i>: its population.yaml and
checkpoints), each agent still writing its own run folder under runs/. The run
folders are the truth: a sweep that is stopped (even by SIGKILL) and started again skips finished
runs, resumes interrupted ones from their checkpoints, and rebuilds results.csv from what is
there, so no row is lost or repeated. A diverged run is recorded as such and not retried.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from spikerl.errors import SpikerlError
from spikerl.fileio import atomic_write_text


@dataclass
class SweepSpec:
    config: str
    overrides: list[str]
    grid: dict[str, list]  # one or two axes: the heatmap's
    variants: dict[str, list] = field(default_factory=dict)  # every combination is a panel
    seeds: list[int] = field(default_factory=lambda: [0])
    solved_at: float | None = None


def parse_axis(text: str, option: str) -> tuple[str, list]:
    """`key=v1,v2,...`, `key=[v1, v2]` (YAML) or `key=start:stop:count` (evenly spaced, both ends)."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise SpikerlError(f"{option} {text!r} must look like key=v1,v2 or key=start:stop:count")
    if raw.startswith("["):
        values = yaml.safe_load(raw)
    elif re.fullmatch(r"[-+.\deE]+:[-+.\deE]+:\d+", raw):
        start, stop, count = raw.split(":")
        values = [round(float(v), 10) for v in np.linspace(float(start), float(stop), int(count))]
    else:
        values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
    if not values:
        raise SpikerlError(f"{option} {key} has an empty range of values")
    return key, values


def cell_overrides(spec: SweepSpec) -> list[tuple[dict, dict]]:
    """Every (variant, grid point) pair as two dicts of key -> value."""
    def product(axes: dict) -> list[dict]:
        return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())] if axes else [{}]

    return [(variant, point) for variant in product(spec.variants) for point in product(spec.grid)]


def csv_value(value):
    """How an axis value stands in results.csv: numbers and strings as they are, anything else as JSON."""
    return value if isinstance(value, (int, float, str)) else json.dumps(value)


def _short(key: str, value) -> str:
    name = key.split(".")[-1]
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9_.+-]", "", f"{name}{text}")


def cell_name(variant: dict, point: dict) -> str:
    return "-".join(_short(k, v) for k, v in {**variant, **point}.items()) or "base"


def validate_spec(spec: SweepSpec, config: str | Path | None = None, overrides: list[str] | None = None) -> None:
    """Every value of every axis must make a valid config, for an environment it can use: unknown keys, bad
    values and unsuitable environments fail here, not in every run. The cells' settings come from `config`
    with `overrides` (a restarted sweep's base_config.yaml), by default the spec's config and overrides."""
    from spikerl.config import load_config
    from spikerl.rl.envs import check_environment

    if config is None:
        config, overrides = spec.config, spec.overrides
    source = "" if str(config) == spec.config else f" (with the settings of {config})"

    if not 1 <= len(spec.grid) <= 2:
        raise SpikerlError(f"a sweep needs one or two --grid axes (the heatmap's), got {len(spec.grid)}")
    if not spec.seeds:
        raise SpikerlError("--seeds is empty")
    for key in [*spec.grid, *spec.variants]:
        if key in ("seed", "run_dir"):
            raise SpikerlError(f"{key} is set by the sweep itself; use --seeds")
    for axes in (spec.grid, spec.variants):
        for key, values in axes.items():
            for value in values:
                try:
                    load_config(config, [*overrides, f"{key}={json.dumps(value)}"])
                except SpikerlError as exc:
                    raise SpikerlError(f"sweep axis {key}={value!r}{source}: {exc}") from None
    for variant, point in cell_overrides(spec):  # the environment of each cell as it will run
        values = [f"{k}={json.dumps(v)}" for k, v in {**variant, **point}.items()]
        try:
            check_environment(load_config(config, [*overrides, *values]))
        except SpikerlError as exc:
            raise SpikerlError(f"sweep cell {cell_name(variant, point)}{source}: {exc}") from None


@dataclass
class RunJob:
    variant: dict
    point: dict
    seed: int
    run_dir: Path

    def values(self) -> list[str]:
        """The cell's axis values as key=value overrides."""
        return [f"{k}={json.dumps(v)}" for k, v in {**self.variant, **self.point}.items()]

    def config(self, base: Path):
        """This run's config: the sweep's resolved `base` config with the cell's values, seed and folder."""
        from spikerl.config import load_config

        return load_config(base, [*self.values(), f"seed={self.seed}", f"run_dir={self.run_dir}"])

    def command(self, base: Path) -> list[str]:
        if (self.run_dir / "config.yaml").is_file():
            return [sys.executable, "-m", "spikerl.cli", "train", "--resume", str(self.run_dir), "progress=false"]
        return [sys.executable, "-m", "spikerl.cli", "train", str(base), *self.values(), f"seed={self.seed}",
                f"run_dir={self.run_dir}", "threads=1", "progress=false"]


def status_of(run_dir: Path) -> str:
    from spikerl.rl.run import run_finished  # imported late: it brings torch, which validating a sweep needs not

    if run_finished(run_dir):
        return "done"
    if (run_dir / "diverged.json").is_file():
        return "diverged"
    if (run_dir / "sweep-error.txt").is_file():
        return "failed"
    return "pending"


def die_with_parent() -> None:
    """Make this process end when its parent ends, however it ends (Linux), so a restart finds no orphan.

    Called in sweep children (before exec) and in tune's local worker processes."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Sweep:
    def __init__(self, spec: SweepSpec, out: Path):
        self.spec, self.out = spec, out
        self.base = out / "base_config.yaml"  # written by prepare()
        self.jobs = [RunJob(variant, point, seed, out / "runs" / cell_name(variant, point) / f"s{seed}")
                     for variant, point in cell_overrides(spec) for seed in spec.seeds]
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Check that the folder holds no other sweep, validate every cell (`validate_spec`) against the settings
        the cells train from, then write sweep.yaml and, once, base_config.yaml.

        `solved_at` only changes the summary, so a restart may change it (the report is redrawn, nothing retrains).
        """
        from spikerl.config import load_config, save_config

        path = self.out / "sweep.yaml"
        text = yaml.safe_dump(asdict(self.spec), sort_keys=False)
        if path.is_file():
            stored, wanted = yaml.safe_load(path.read_text()), yaml.safe_load(text)
            stored.pop("solved_at", None), wanted.pop("solved_at", None)
            if stored != wanted:
                raise SpikerlError(f"{self.out} holds another sweep (its sweep.yaml differs); choose another --out")
        source, overrides = self._settings_source()
        validate_spec(self.spec, source, overrides)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        if not self.base.is_file():
            save_config(load_config(source, overrides), self.base)

    def _settings_source(self) -> tuple[str | Path, list[str]]:
        """Where the cells take their settings: base_config.yaml; in a folder an older spikerl made (runs but no
        base_config.yaml), a started run's own config (each cell overrides its values, seed and folder); in a
        new sweep, the config file with the sweep's overrides."""
        if self.base.is_file():
            return self.base, []
        started = sorted(self.out.glob("runs/*/s*/config.yaml"))
        return (started[0], []) if started else (self.spec.config, self.spec.overrides)

    def populations(self) -> list[list[RunJob]]:
        """The sweep's runs grouped into populations: those whose configs share everything but per-agent values."""
        from spikerl.rl.population import shared_settings

        groups: dict[str, list[RunJob]] = {}
        for job in self.jobs:
            key = json.dumps(shared_settings(job.config(self.base)), sort_keys=True, default=str)
            groups.setdefault(key, []).append(job)
        return list(groups.values())

    def units(self, population: bool) -> list[tuple[str, list[RunJob]]]:
        """The sweep's units of work: each run alone, or (population) each population of runs; (name, runs)."""
        if population:
            return [(f"populations/p{i}", jobs) for i, jobs in enumerate(self.populations())]
        return [(str(job.run_dir.relative_to(self.out)), [job]) for job in self.jobs]

    def pending(self, jobs: list[RunJob]) -> bool:
        return any(status_of(job.run_dir) in ("pending", "failed") for job in jobs)

    def run(self, workers: int, log=print, population: bool = False, storage: str | None = None,
            heartbeat_s: int = 30) -> list[tuple[str, str]]:
        """Train every unfinished unit on this machine, `workers` child processes at a time; with `storage`,
        share the units with every other process running this sweep on the same storage, and return the
        units its study gave up on (name, error). A local sweep returns [] (its results say what failed)."""
        if storage is not None:
            from spikerl.tune.shared_sweep import run_shared

            return run_shared(self, storage, workers, heartbeat_s, population, log)
        units = self.units(population)
        todo = [unit for unit in units if self.pending(unit[1])]
        grouped = f" in {len(units)} populations" if population else ""
        log(f"sweep {self.out}: {len(self.jobs)} runs{grouped}, {len(units) - len(todo)}"
            f"{' populations' if population else ''} already finished, {len(todo)} to run on {workers} worker(s)")
        done_count = [len(units) - len(todo)]

        def work(unit) -> None:
            error = self.train_unit(*unit, population)
            with self._lock:
                done_count[0] += 1
                log(f"[{done_count[0]}/{len(units)}] {self.describe(*unit)}" + (f" ({error})" if error else ""))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, todo))
        self.write_results()
        return []

    def describe(self, name: str, jobs: list[RunJob]) -> str:
        statuses = [status_of(job.run_dir) for job in jobs]
        if len(jobs) == 1:
            return f"{name}: {statuses[0]}"
        return f"{name} ({len(jobs)} runs): " + ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))

    def train_unit(self, name: str, jobs: list[RunJob], population: bool) -> str:
        """Train one unit as a child process (resuming what its folders hold); results.csv is rewritten after.
        Returns the child's last error line ("" when it succeeded)."""
        if population:
            home = self.out / name
            self._prepare_population(home, jobs)
            command = [sys.executable, "-m", "spikerl.cli", "train", "--resume", str(home), "progress=false", "threads=1"]
        else:
            job = jobs[0]
            job.run_dir.parent.mkdir(parents=True, exist_ok=True)
            if job.run_dir.exists() and not (job.run_dir / "config.yaml").is_file():
                shutil.rmtree(job.run_dir)  # killed before its config was written, or failed to start: nothing to keep
            command = job.command(self.base)
        result = subprocess.run(command, capture_output=True, text=True, preexec_fn=die_with_parent,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        error = _child_error(result.returncode, result.stderr)
        for job in jobs:
            if result.returncode != 0 and status_of(job.run_dir) not in ("done", "diverged"):
                job.run_dir.mkdir(parents=True, exist_ok=True)
                (job.run_dir / "sweep-error.txt").write_text(result.stderr)
        with self._lock:
            self.write_results()
        return error

    def _prepare_population(self, home: Path, jobs: list[RunJob]) -> None:
        """Agent configs and population.yaml, so that `spikerl train --resume home` trains a new population from
        step 0 (no checkpoint yet) or continues an interrupted one."""
        from spikerl.config import save_config
        from spikerl.rl.population import write_population

        for job in jobs:
            (job.run_dir / "sweep-error.txt").unlink(missing_ok=True)
            if not (job.run_dir / "config.yaml").is_file():
                job.run_dir.mkdir(parents=True, exist_ok=True)
                save_config(job.config(self.base), job.run_dir / "config.yaml")
        if not (home / "population.yaml").is_file():
            write_population(home, [job.run_dir for job in jobs])

    def rows(self) -> list[dict]:
        rows = []
        for job in self.jobs:
            status = status_of(job.run_dir)
            row = {**{k: csv_value(v) for k, v in {**job.variant, **job.point}.items()},
                   "seed": job.seed, "status": status, "final_return": "", "best_return": "", "steps": "",
                   "wall_time_s": "", "run_dir": str(job.run_dir.relative_to(self.out))}
            if status == "done":
                final = json.loads((job.run_dir / "final_eval.json").read_text())
                row.update(final_return=final["mean_return"], best_return=final["best_eval_mean_return"],
                           steps=final["global_step"], wall_time_s=round(final["wall_time_s"], 1))
            elif status == "diverged":
                row["steps"] = json.loads((job.run_dir / "diverged.json").read_text())["global_step"]
            if status != "pending":
                rows.append(row)
        return rows

    def write_results(self) -> Path:
        """results.csv from the run folders, written whole through a rename: never a lost or repeated row."""
        path = self.out / "results.csv"
        fields = [*self.spec.variants, *self.spec.grid, "seed", "status", "final_return", "best_return", "steps",
                  "wall_time_s", "run_dir"]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows())
        atomic_write_text(path, text.getvalue())
        return path


def _child_error(returncode: int, stderr: str) -> str:
    """What a training child's failure says: its last stderr line, else how it ended (a child killed by the
    out-of-memory killer writes nothing); "" when it succeeded."""
    if returncode == 0:
        return ""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
        return f"{how}: {last}" if last else how
    return last or f"exited with status {returncode} and no message"
