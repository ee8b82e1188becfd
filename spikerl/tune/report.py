"""Heatmaps and the robustness summary of a sweep, from its results.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from spikerl.tune.sweep import SweepSpec, cell_overrides, csv_value


def _key(value) -> str:
    """An axis value as it reads back from results.csv."""
    return str(csv_value(value))


def grid_means(spec: SweepSpec, rows: list[dict]) -> list[tuple[dict, np.ndarray]]:
    """Per variant: the mean final return over seeds at each grid point ([len(y), len(x)]; NaN: no finished run)."""
    axes = list(spec.grid)
    x_key, y_key = axes[0], axes[1] if len(axes) > 1 else None
    xs, ys = spec.grid[x_key], spec.grid[y_key] if y_key else [None]
    out = []
    variants = [v for v, _ in cell_overrides(spec)][:: len(xs) * len(ys)]
    for variant in variants:
        grid = np.full((len(ys), len(xs)), np.nan)
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                want = {**{k: _key(v) for k, v in variant.items()}, x_key: _key(x), **({y_key: _key(y)} if y_key else {})}
                returns = [float(r["final_return"]) for r in rows
                           if r["status"] == "done" and all(_key(r[k]) == v for k, v in want.items())]
                if returns:
                    grid[j, i] = np.mean(returns)
        out.append((variant, grid))
    return out


def read_rows(out: Path) -> list[dict]:
    with (out / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def summary_table(spec: SweepSpec, rows: list[dict]) -> str:
    lines = ["| variant | runs done | diverged or failed | share of grid solved | mean final return | spread (std over grid) |",
             "|---|---|---|---|---|---|"]
    for variant, grid in grid_means(spec, rows):
        name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in variant.items()) or "base"
        mine = [r for r in rows if all(_key(r[k]) == _key(v) for k, v in variant.items())]
        done = sum(r["status"] == "done" for r in mine)
        bad = sum(r["status"] in ("diverged", "failed") for r in mine)
        finite = grid[np.isfinite(grid)]
        solved = "n/a" if spec.solved_at is None or finite.size == 0 else f"{np.mean(finite >= spec.solved_at):.0%}"
        mean = f"{finite.mean():.1f}" if finite.size else "n/a"
        spread = f"{finite.std():.1f}" if finite.size else "n/a"
        lines.append(f"| {name} | {done} | {bad} | {solved} | {mean} | {spread} |")
    return "\n".join(lines)


def plot_heatmaps(spec: SweepSpec, rows: list[dict], path: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = grid_means(spec, rows)
    values = np.concatenate([g[np.isfinite(g)] for _, g in panels]) if panels else np.array([])
    vmin, vmax = (values.min(), values.max()) if values.size else (0.0, 1.0)
    axes_keys = list(spec.grid)
    xs = spec.grid[axes_keys[0]]
    ys = spec.grid[axes_keys[1]] if len(axes_keys) > 1 else [""]
    # At most four panels a row, so many variants wrap instead of crowding their titles.
    cols = min(len(panels), 4)
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(2.7 * cols + 1.2, 3.2 * rows_n), squeeze=False, layout="constrained")
    image = None
    flat = axes.ravel().tolist()
    for index, (ax, (variant, grid)) in enumerate(zip(flat, panels)):
        image = ax.imshow(grid, origin="lower", vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(xs)), [f"{x:g}" if isinstance(x, float) else str(x) for x in xs], fontsize=7)
        ax.set_yticks(range(len(ys)), [f"{y:g}" if isinstance(y, float) else str(y) for y in ys], fontsize=7)
        ax.set_xlabel(axes_keys[0].split(".")[-1])
        if index % cols == 0 and len(axes_keys) > 1:
            ax.set_ylabel(axes_keys[1].split(".")[-1])
        ax.set_title("\n".join(f"{k.split('.')[-1]}={v}" for k, v in variant.items()) or "base", fontsize=8)
        for (j, i), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(i, j, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value < (vmin + vmax) / 2 else "black")
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=flat, label="final eval return (mean over seeds)", shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
