"""Learning curves: evaluation returns of several runs, grouped by variant, mean and min-max band over seeds."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import yaml

from spikerl.errors import SpikerlError
from spikerl.rl.population import is_bookkeeping


MISSING = object()  # a mapping's key (env_kwargs.NAME) that a run does not set
UNREAD = object()  # a setting the run's training never reads (`config.settings_the_run_reads`)


def read_run_settings(run_dir: Path) -> dict[str, object]:
    """A run folder's config.yaml as dotted keys, a key it lacks (written before the setting existed) at
    today's default, and UNREAD for a setting its training never read (`config.settings_the_run_reads`).
    Read as written, unvalidated: a folder from an older spikerl reads too."""
    from spikerl.config import TrainConfig, config_to_dict, flatten_settings, settings_the_run_reads
    from spikerl.rl.population import refuse_population_folder

    path = run_dir / "config.yaml"
    refuse_population_folder(run_dir, "its agents' run folders")
    if not path.is_file():
        raise SpikerlError(f"{run_dir} is not a spikerl run folder (no config.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpikerlError(f"{path} is not readable YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise SpikerlError(f"{path} does not hold a spikerl config (a mapping of settings)")
    settings = {**flatten_settings(config_to_dict(TrainConfig())), **flatten_settings(data)}
    read = settings_the_run_reads(settings)
    return {k: v if k in read else UNREAD for k, v in settings.items()}


def _as_override(value: object) -> str:
    """A value as an override writes it (`null`, `true`, `[256, 256]`, `'True'` for the string). A string that
    could read as more of a label (`1, b=2`, `(unset)`) is quoted, so that one label names one variant."""
    quoted = isinstance(value, str) and any(part in value for part in (", ", "=", "(unset)"))
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), default_style="'" if quoted else None)
    text = text.strip()
    return text[:-len("\n...")] if text.endswith("\n...") else text


def variant_labels(settings: list[dict[str, object]]) -> list[str]:
    """One label per run (its `read_run_settings`): environment, algorithm and network kind, then, among the
    runs that share those, each setting in which the run departs from the most common value (ties: the
    value met first) as an override (`network.neuron.surrogate_slope=25.0`). Runs share a label, and with
    it a curve and a mean, exactly when they differ in nothing but the seed, bookkeeping and settings they
    never read: of two runs that differ in a setting, at most one holds its most common value. A setting
    counts only among the runs that read it (the population encoder's among those that have one); a run
    that does not read it differs from those that do in the setting that switches it on (the encoder)."""
    written = [{k: v if v is UNREAD else _as_override(v) for k, v in own.items() if not is_bookkeeping(k)}
               for own in settings]
    bases = [f"{s.get('env_id')} {str(s.get('algo')).upper()} {str(s.get('network.kind')).upper()}" for s in settings]
    common: dict[str, dict[str, object]] = {}
    for base in dict.fromkeys(bases):
        peers = [own for other_base, own in zip(bases, written) if other_base == base]
        keys = dict.fromkeys(k for own in peers for k in own)  # a mapping such as env_kwargs may name a key in some only
        values = {k: Counter(own.get(k, MISSING) for own in peers if own.get(k) is not UNREAD) for k in keys}
        common[base] = {k: counts.most_common(1)[0][0] for k, counts in values.items() if counts}
    labels = []
    for base, own in zip(bases, written):
        departures = [k for k, value in sorted(common[base].items())
                      if own.get(k) is not UNREAD and own.get(k, MISSING) != value]
        labels.append(", ".join([base] + [f"{k}={own.get(k, '(unset)')}" for k in departures]))
    return labels


def read_eval_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / "eval.csv"
    if not path.is_file():
        raise SpikerlError(f"{run_dir} has no eval.csv; is it a spikerl run folder?")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SpikerlError(f"{path} has no evaluations yet")
    curve: dict[int, float] = {}
    for row in rows:  # the final evaluation repeats the last step; it wins, being over more episodes
        curve[int(row["global_step"])] = float(row["mean_return"])
    steps = np.array(sorted(curve))
    return steps, np.array([curve[s] for s in steps])


def plot_runs(run_dirs: list[Path], output: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for run_dir, label in zip(run_dirs, variant_labels([read_run_settings(run_dir) for run_dir in run_dirs])):
        groups[label].append(read_eval_curve(run_dir))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curves in sorted(groups.items()):
        # Seeds may stop at different steps (early stopping): use the steps all of them reached.
        end = min(steps[-1] for steps, _ in curves)
        grid = np.unique(np.concatenate([steps[steps <= end] for steps, _ in curves]))
        values = np.stack([np.interp(grid, steps, returns) for steps, returns in curves])
        line, = ax.plot(grid, values.mean(axis=0), label=f"{label} ({len(curves)} run{'s' * (len(curves) > 1)})")
        ax.fill_between(grid, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (deterministic)")
    ax.set_title(title or "mean over each variant's runs, band: min to max")
    ax.grid(alpha=0.3)
    # Below the axes: variant labels may be long, and the legend must not hide the curves.
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), fontsize="small", frameon=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return output


def summarize_runs(run_dirs: list[Path]) -> str:
    """A Markdown table: per run, the final and best evaluation returns, the best 100-episode average of
    training returns (and the episode it ends at), steps, wall time and steps per second; then per variant,
    the means."""
    import json

    rows, groups = [], defaultdict(list)
    settings = [read_run_settings(run_dir) for run_dir in run_dirs]
    for run_dir, own, label in zip(run_dirs, settings, variant_labels(settings)):
        path = run_dir / "final_eval.json"
        if not path.is_file():
            diverged = run_dir / "diverged.json"
            if diverged.is_file():
                info = json.loads(diverged.read_text())
                raise SpikerlError(f"{run_dir} diverged at step {info['global_step']} ({info['reason']}) and has no "
                                   "final evaluation; leave it out of the summary")
            raise SpikerlError(f"{run_dir} has no final_eval.json; has its training finished?")
        final = json.loads(path.read_text())
        seed = own["seed"]
        train_average = final.get("best_train_average")  # absent in runs made before it was recorded
        row = (label, seed, final["global_step"], final["mean_return"], final["best_eval_mean_return"],
               np.nan if train_average is None else train_average, final.get("best_train_average_episode"),
               final["wall_time_s"], final["steps_per_second"])
        rows.append(row)
        groups[label].append(row)
    lines = ["| variant | seed | steps | final eval return | best eval return | best 100-episode training average "
             "(episode) | wall time (s) | steps/s |", "|---|---|---|---|---|---|---|---|"]
    for label, seed, steps, final_ret, best_ret, train_avg, train_ep, wall, rate in sorted(rows, key=lambda r: r[:2]):
        average = "-" if train_ep is None else f"{train_avg:.1f} ({train_ep})"
        lines.append(f"| {label} | {seed} | {steps} | {final_ret:.1f} | {best_ret:.1f} | {average} | {wall:.0f} | {rate:.0f} |")
    for label, group in sorted(groups.items()):
        finals, bests, averages, walls, rates = (np.array([r[i] for r in group], dtype=float) for i in (3, 4, 5, 7, 8))
        average = "-" if np.isnan(averages).any() else f"**{averages.mean():.1f}**"
        lines.append(f"| **{label}, mean of {len(group)}** | | | **{finals.mean():.1f}** | **{bests.mean():.1f}** "
                     f"| {average} | **{walls.mean():.0f}** | **{rates.mean():.0f}** |")
    return "\n".join(lines)
