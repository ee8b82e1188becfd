"""Spiking / ANN twin ratios of the MuJoCo PPO table (benchmarks/ppo_mujoco.sh), against the issue's bar: the
spiking mean final evaluation at least 0.9 of the twin's on three of the four tasks.

Usage: python3 benchmarks/ppo_ratios.py OUT:A:B [OUT:A:B ...] [--tasks TASK ...]
Each OUT:A:B is a ppo_mujoco.sh folder with the seeds A..B-1 it trained (OUT/<task>/{snn,ann}/s<seed>); several
pool their seeds, e.g. runs/ppo-mujoco-t8-lsd:0:2 runs/ppo-mujoco-t8-lsd-s2-3:2:4 for seeds 0 to 3. With at least
three seeds of each kind, the ratio of the final evaluations also gets a 90% bootstrap interval: the seeds of each
kind resampled with replacement, separately (they are independent runs), 20,000 times, the ratio of the means.
Only the standard library, so any Python 3.10 or later runs it.
"""

import argparse
import json
import random
import sys

TASKS = ("halfcheetah", "hopper", "walker2d", "ant")
BAR = 0.9
FIELDS = ("mean_return", "best_eval_mean_return")  # of final_eval.json: the final and the best evaluation


def folder_and_seeds(text: str) -> tuple[str, range]:
    out, _, seeds = text.rpartition(":")
    out, _, first = out.rpartition(":")
    if not out or not first.isdigit() or not seeds.isdigit() or int(seeds) <= int(first):
        raise argparse.ArgumentTypeError(f"expected OUT:A:B with A < B (seeds A..B-1), got '{text}'")
    return out, range(int(first), int(seeds))


def final_evaluations(folders, task: str, kind: str) -> dict[str, list[float]]:
    """Each of FIELDS over the pooled seeds of one task and kind (snn or ann), each file read once."""
    values = {field: [] for field in FIELDS}
    for out, seeds in folders:
        for seed in seeds:
            path = f"{out}/{task}/{kind}/s{seed}/final_eval.json"
            try:
                with open(path) as file:
                    evaluation = json.load(file)
                for field in FIELDS:
                    values[field].append(float(evaluation[field]))
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise SystemExit(f"ppo_ratios.py: cannot read {path}: {error!r}") from None
    return values


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def bootstrap_interval(spiking: list[float], twin: list[float], draws: int = 20000) -> tuple[float, float] | None:
    """The 5th and 95th percentiles of mean(spiking*) / mean(twin*) over resamples; None where a twin mean is <= 0."""
    rng = random.Random(0)
    ratios = []
    for _ in range(draws):
        twin_mean = mean(rng.choices(twin, k=len(twin)))
        if twin_mean <= 0:
            return None
        ratios.append(mean(rng.choices(spiking, k=len(spiking))) / twin_mean)
    ratios.sort()
    return ratios[int(0.05 * draws)], ratios[int(0.95 * draws) - 1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=folder_and_seeds, metavar="OUT:A:B")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    args = parser.parse_args(argv)
    seeds = sorted(seed for _, seeds in args.folders for seed in seeds)
    if len(set(seeds)) < len(seeds):  # one seed twice would count one run as two
        parser.error(f"a seed appears in more than one OUT:A:B (seeds {', '.join(map(str, seeds))})")
    rows = {task: {kind: final_evaluations(args.folders, task, kind) for kind in ("snn", "ann")}
            for task in args.tasks}
    with_interval = len(seeds) >= 3
    print(f"\n## spiking / ANN twin, mean over seeds {', '.join(map(str, seeds))}\n")
    print("| task | final eval | best eval |" + (" final eval, 90% bootstrap interval |" if with_interval else ""))
    print("|---|---|---|" + ("---|" if with_interval else ""))
    passed = 0
    for task, kinds in rows.items():
        spiking, twin = kinds["snn"], kinds["ann"]
        twin_final, twin_best = mean(twin["mean_return"]), mean(twin["best_eval_mean_return"])
        if twin_final <= 0 or twin_best <= 0:  # a ratio of returns at or below zero says nothing (a short smoke run)
            print(f"| {task} | n/a (the twin's mean is {twin_final:.1f}) | n/a |" + (" n/a |" if with_interval else ""))
            continue
        final = round(mean(spiking["mean_return"]) / twin_final, 2)  # counted as printed
        best = mean(spiking["best_eval_mean_return"]) / twin_best
        interval = ""
        if with_interval:
            bounds = bootstrap_interval(spiking["mean_return"], twin["mean_return"])
            interval = (" n/a (a resampled twin mean at or below zero) |" if bounds is None
                        else f" {bounds[0]:.2f} to {bounds[1]:.2f} |")
        passed += final >= BAR
        print(f"| {task} | {final:.2f} | {best:.2f} |{interval}")
    print(f"\nfinal eval at least {BAR} of the twin's on {passed} of {len(rows)} tasks "
          "(the bar: 3 of the 4 tasks, on seeds 0 and 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
