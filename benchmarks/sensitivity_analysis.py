"""The statistics of a sensitivity sweep with several seeds per cell, and the paper's three robustness claims.

    .venv/bin/python benchmarks/sensitivity_analysis.py runs/sensitivity_study [--solve 475] [--boot 2000]

Reads OUT/results.csv (one row per run: variant keys, grid keys, seed, final_return) and prints Markdown:

- per variant and cell: the mean final return over seeds and its standard error;
- per variant: the mean over the grid, the share of cells whose mean reaches --solve, and the spread
  over the grid (the standard deviation of the nine cell means), each with a 95% bootstrap interval;
- per claim (longer T, two-neuron encoding, randomized membrane), the difference between the variants
  that differ only in that factor, pooled over the other factors: in spread (a robust variant has a
  smaller one) and in mean return, with a 95% bootstrap interval, and the verdict: supported (the
  interval excludes 0 in the paper's direction), contradicted (it excludes 0 the other way) or
  undecided.

The bootstrap resamples the seeds of every cell with replacement (runs are independent given their
seed), recomputing every statistic from the resampled runs.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

FACTORS = {  # the claim, the sweep key, the paper's "better" value, the baseline value
    "longer T": ("network.timesteps", None, None),  # the largest T against the smallest
    "two-neuron encoding": ("network.encoder", "two_neuron", "direct"),
    "randomized membrane": ("network.neuron.randomize", "normal", "none"),
}


def load(out: Path) -> tuple[list[str], list[str], dict]:
    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    fixed = {"seed", "status", "final_return", "best_return", "steps", "wall_time_s", "run_dir"}
    keys = [k for k in rows[0] if k not in fixed]
    grid = [k for k in keys if k.endswith(".alpha") or k.endswith(".beta")]
    variant_keys = [k for k in keys if k not in grid]
    runs: dict = {}
    for row in rows:
        if row["status"] != "done":
            value = np.nan if row["status"] == "pending" else 0.0  # a diverged run counts as return 0
        else:
            value = float(row["final_return"])
        variant = tuple(row[k] for k in variant_keys)
        cell = tuple(row[k] for k in grid)
        runs.setdefault(variant, {}).setdefault(cell, []).append(value)
    return variant_keys, grid, runs


def variant_stats(cells: dict, solve: float) -> dict:
    means = np.array([np.nanmean(v) for v in cells.values()])
    return {"mean": float(np.mean(means)), "share": float(np.mean(means >= solve)), "spread": float(np.std(means))}


def resample(runs: dict, rng: np.random.Generator) -> dict:
    return {variant: {cell: list(rng.choice(v, size=len(v))) for cell, v in cells.items()}
            for variant, cells in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--solve", type=float, default=475.0)
    parser.add_argument("--boot", type=int, default=2000)
    args = parser.parse_args()
    variant_keys, grid, runs = load(args.out)
    seeds = min(len(v) for cells in runs.values() for v in cells.values())
    rng = np.random.default_rng(0)
    boots = [resample(runs, rng) for _ in range(args.boot)]

    def interval(values) -> str:
        low, high = np.percentile(values, [2.5, 97.5])
        return f"[{low:.1f}, {high:.1f}]"

    print("## Per variant\n")
    print("| " + " | ".join(k.split(".")[-1] for k in variant_keys)
          + " | mean over grid | share of cells >= {:.0f} | spread over grid (std of cell means) |".format(args.solve))
    print("|" + "---|" * (len(variant_keys) + 3))
    for variant, cells in sorted(runs.items()):
        s = variant_stats(cells, args.solve)
        b = [variant_stats(boot[variant], args.solve) for boot in boots]
        print("| " + " | ".join(variant) + f" | {s['mean']:.1f} {interval([x['mean'] for x in b])} "
              f"| {100 * s['share']:.0f}% {interval([100 * x['share'] for x in b])} "
              f"| {s['spread']:.1f} {interval([x['spread'] for x in b])} |")

    print("\n## Per cell: mean final return over seeds (standard error)\n")
    print("| " + " | ".join(k.split(".")[-1] for k in variant_keys) + " | "
          + " | ".join("/".join(c) for c in sorted(next(iter(runs.values())))) + " |")
    print("|" + "---|" * (len(variant_keys) + len(next(iter(runs.values())))))
    for variant, cells in sorted(runs.items()):
        text = [f"{np.nanmean(v):.0f} ({np.nanstd(v, ddof=1) / np.sqrt(np.sum(~np.isnan(v))):.0f})"
                if np.sum(~np.isnan(v)) > 1 else f"{np.nanmean(v):.0f}" for _, v in sorted(cells.items())]
        print("| " + " | ".join(variant) + " | " + " | ".join(text) + " |")

    print("\n## The paper's claims\n")
    print("| claim | compared | spread: better - baseline [95%] | verdict (robustness) | mean: better - baseline [95%] |")
    print("|---|---|---|---|---|")
    for claim, (key, better, baseline) in FACTORS.items():
        if key not in variant_keys:
            continue
        i = variant_keys.index(key)
        values = sorted({v[i] for v in runs}, key=lambda x: float(x) if x.replace(".", "").isdigit() else x)
        better = better if better is not None else values[-1]
        baseline = baseline if baseline is not None else values[0]
        pairs = [(v, v[:i] + (baseline,) + v[i + 1:]) for v in runs if v[i] == better]
        pairs = [(a, b) for a, b in pairs if b in runs]

        def differences(sample):
            spread = np.mean([variant_stats(sample[a], args.solve)["spread"] - variant_stats(sample[b], args.solve)["spread"]
                              for a, b in pairs])
            mean = np.mean([variant_stats(sample[a], args.solve)["mean"] - variant_stats(sample[b], args.solve)["mean"]
                            for a, b in pairs])
            return spread, mean

        spread, mean = differences(runs)
        boot = np.array([differences(b) for b in boots])
        low, high = np.percentile(boot[:, 0], [2.5, 97.5])
        verdict = "supported" if high < 0 else "contradicted" if low > 0 else "undecided"
        if seeds < 2:
            verdict = "undecided (one seed per cell: no estimate of the noise)"
        print(f"| {claim} | {key.split('.')[-1]} {better} vs {baseline}, {len(pairs)} pairs | {spread:.1f} "
              f"[{low:.1f}, {high:.1f}] | {verdict} | {mean:.1f} {interval(boot[:, 1])} |")


if __name__ == "__main__":
    main()
