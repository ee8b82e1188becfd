"""`spikerl sweep` and `spikerl tune`: many training runs over a grid or a search space."""

from __future__ import annotations

import argparse
from pathlib import Path

from spikerl.errors import SpikerlError


def cmd_sweep(args: argparse.Namespace) -> int:
    from spikerl.tune.report import plot_heatmaps, read_rows, summary_table
    from spikerl.tune.sweep import Sweep, SweepSpec, parse_axis, validate_spec

    grid = dict(parse_axis(text, "--grid") for text in args.grid)
    variants = dict(parse_axis(text, "--variant") for text in args.variant)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SpikerlError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if not Path(args.config).is_file():
        raise SpikerlError(f"config file not found: {args.config}")
    if args.workers < 1:
        raise SpikerlError(f"--workers must be >= 1, got {args.workers}")
    spec = SweepSpec(config=args.config, overrides=args.overrides, grid=grid, variants=variants, seeds=seeds,
                     solved_at=args.solved_at)
    validate_spec(spec)
    sweep = Sweep(spec, Path(args.out))
    sweep.prepare()
    sweep.run(args.workers, log=lambda line: print(line, flush=True))
    rows = read_rows(sweep.out)
    heatmaps = plot_heatmaps(spec, rows, sweep.out / "heatmaps.png", args.title)
    table = summary_table(spec, rows)
    (sweep.out / "summary.md").write_text(table + "\n")
    print(table)
    print(f"results: {sweep.out / 'results.csv'}, heatmaps: {heatmaps}, summary: {sweep.out / 'summary.md'}")
    return 0


def add_commands(sub) -> None:
    sweep = sub.add_parser("sweep", help="sensitivity sweep: grid x variants x seeds of training runs, heatmaps", description=(
        "Train every combination of the --grid axes (the heatmap's x and y) and --variant axes (one panel each) for "
        "every seed. Values: key=v1,v2 or key=start:stop:count or key=[YAML list]. Restarting the same command "
        "continues: finished runs are kept, interrupted ones resume."))
    sweep.add_argument("config")
    sweep.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=VALUES", help="a heatmap axis (one or two)")
    sweep.add_argument("--variant", action="append", default=[], metavar="KEY=VALUES", help="a panel axis (any number)")
    sweep.add_argument("--seeds", default="0", help="comma-separated seeds per cell (default 0)")
    sweep.add_argument("--workers", type=int, default=1, help="runs at a time, one process and one thread each")
    sweep.add_argument("--out", required=True, help="the sweep's folder")
    sweep.add_argument("--solved-at", type=float, help="a cell counts as solving the task at this mean final return")
    sweep.add_argument("--title")
    sweep.set_defaults(func=cmd_sweep)
