"""Learning curves: evaluation returns of several runs, grouped by variant, mean and min-max band over seeds."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from spikerl.errors import SpikerlError


# Settings that say where and how a run was kept, not what it trained: runs that differ only in these and
# their seed are seeds of one variant.
BOOKKEEPING_KEYS = ("seed", "run_dir", "progress", "threads", "checkpoint_every", "keep_checkpoints")
MISSING = object()  # a mapping's key (env_kwargs.NAME) that a run does not set


def _run_settings(run_dir: Path) -> dict[str, object]:
    from spikerl.config import config_from_dict, config_to_dict, flatten_settings

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise SpikerlError(f"{run_dir} is not a spikerl run folder (no config.yaml)")
    try:
        cfg = config_from_dict(yaml.safe_load(path.read_text()))  # old folders gain the newer settings' defaults
    except (SpikerlError, yaml.YAMLError) as exc:
        raise SpikerlError(f"{path}: {str(exc).splitlines()[0]}") from None
    return {k: v for k, v in flatten_settings(config_to_dict(cfg)).items() if k not in BOOKKEEPING_KEYS}


def run_labels(run_dirs: list[Path]) -> list[str]:
    """One label per run: environment, algorithm and network kind; where runs that share those differ in
    other settings, each run's values of them as overrides (`network.timesteps=8`). So runs share a label,
    and with it a curve and a mean, exactly when they differ in nothing but the seed and bookkeeping."""
    settings = [_run_settings(run_dir) for run_dir in run_dirs]
    bases = [f"{s['env_id']} {s['algo'].upper()} {s['network.kind'].upper()}" for s in settings]
    labels = []
    for base, own in zip(bases, settings):
        peers = [other for other_base, other in zip(bases, settings) if other_base == base]
        # Both sides' keys: a mapping such as env_kwargs may name a key in some runs only.
        differ = sorted({k for other in peers for k in {**own, **other} if own.get(k, MISSING) != other.get(k, MISSING)})
        labels.append(", ".join([base] + [f"{k}={own.get(k, '(unset)')}" for k in differ]))
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
    for run_dir, label in zip(run_dirs, run_labels(run_dirs)):
        groups[label].append(read_eval_curve(run_dir))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curves in sorted(groups.items()):
        # Seeds may stop at different steps (early stopping): use the steps all of them reached.
        end = min(steps[-1] for steps, _ in curves)
        grid = np.unique(np.concatenate([steps[steps <= end] for steps, _ in curves]))
        values = np.stack([np.interp(grid, steps, returns) for steps, returns in curves])
        line, = ax.plot(grid, values.mean(axis=0), label=f"{label} ({len(curves)} seed{'s' * (len(curves) > 1)})")
        ax.fill_between(grid, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (deterministic)")
    ax.set_title(title or "mean over seeds, band: min to max")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def summarize_runs(run_dirs: list[Path]) -> str:
    """A Markdown table: per run, the final and best evaluation returns, the best 100-episode average of
    training returns (and the episode it ends at), steps, wall time and steps per second; then per variant,
    the means."""
    import json

    rows, groups = [], defaultdict(list)
    for run_dir, label in zip(run_dirs, run_labels(run_dirs)):
        path = run_dir / "final_eval.json"
        if not path.is_file():
            raise SpikerlError(f"{run_dir} has no final_eval.json; has its training finished?")
        final = json.loads(path.read_text())
        seed = yaml.safe_load((run_dir / "config.yaml").read_text())["seed"]
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
