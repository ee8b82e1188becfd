"""`spikerl sweep`, `tune` and `tune-export`: many training runs over a grid or a search space."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spikerl.errors import SpikerlError


def cmd_sweep(args: argparse.Namespace) -> int:
    from spikerl.tune.report import plot_heatmaps, read_rows, summary_table
    from spikerl.tune.sweep import Sweep, SweepSpec, parse_axis

    grid = dict(parse_axis(text, "--grid") for text in args.grid)
    variants = dict(parse_axis(text, "--variant") for text in args.variant)
    seeds = _seeds(args.seeds)
    if not Path(args.config).is_file():
        raise SpikerlError(f"config file not found: {args.config}")
    if args.workers < 1:
        raise SpikerlError(f"--workers must be >= 1, got {args.workers}")
    spec = SweepSpec(config=args.config, overrides=args.overrides, grid=grid, variants=variants, seeds=seeds,
                     solved_at=args.solved_at)
    if args.heartbeat < 1:
        raise SpikerlError(f"--heartbeat must be >= 1, got {args.heartbeat}")
    sweep = Sweep(spec, Path(args.out))
    sweep.prepare()  # validates every cell before it writes anything
    given_up = sweep.run(args.workers, log=lambda line: print(line, flush=True), population=args.population,
                         storage=args.storage, heartbeat_s=args.heartbeat)
    rows = read_rows(sweep.out)
    heatmaps = plot_heatmaps(spec, rows, sweep.out / "heatmaps.png", args.title)
    table = summary_table(spec, rows)
    (sweep.out / "summary.md").write_text(table + "\n")
    print(table)
    print(f"results: {sweep.out / 'results.csv'}, heatmaps: {heatmaps}, summary: {sweep.out / 'summary.md'}")
    # A script running sweeps must see failures (diverged runs are results). A shared sweep (--storage) asks
    # its study, not the folders here: other machines may have finished what failed here, and the study gives
    # up on a unit only once it failed twice.
    if args.storage:
        if given_up:
            name, error = given_up[0]
            kind = ("population" if args.population else "run") + ("s" if len(given_up) > 1 else "")
            print(f"spikerl: the shared sweep gave up on {len(given_up)} {kind} after two failures each (the "
                  f"first, {name}: {error}); start the sweep again to retry them", file=sys.stderr)
            return 1
        return 0
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        print(f"spikerl: {len(failed)} of {len(rows)} runs failed (each says why in its sweep-error.txt, the first "
              f"{failed[0]['run_dir']}); run the sweep again to retry them", file=sys.stderr)
        return 1
    return 0


def _seeds(text: str) -> list[int]:
    from spikerl.rl.population import checked_seeds

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SpikerlError(f"--seeds must be comma-separated integers, got {text!r}") from None
    return checked_seeds(seeds, text)


def cmd_tune(args: argparse.Namespace) -> int:
    from spikerl.config import MAX_SEED
    from spikerl.tune.space import load_space, validate_space
    from spikerl.tune.study import OBJECTIVES, TuneSpec, best_trial, counts, export_preset, tune, write_trials_csv

    if not Path(args.config).is_file():
        raise SpikerlError(f"config file not found: {args.config}")
    objectives = [o.strip() for o in args.objective.split(",") if o.strip()]
    if not objectives or objectives[0] != "return" or any(o not in OBJECTIVES for o in objectives) \
            or len(set(objectives)) != len(objectives):
        raise SpikerlError(f"--objective must be 'return' or 'return,spikes', got {args.objective!r}")
    pruner = args.pruner or ("median" if len(objectives) == 1 else "none")
    if pruner == "median" and len(objectives) > 1:
        raise SpikerlError("Optuna cannot prune a multi-objective study; leave out --pruner or give --pruner none")
    if args.sampler_seed is not None and not 0 <= args.sampler_seed <= MAX_SEED - args.workers:
        raise SpikerlError(f"--sampler-seed must be in [0, {MAX_SEED} - workers] (worker i seeds TPE with it + i), "
                           f"got {args.sampler_seed}")
    for name, value, low in (("--trials", args.trials, 1), ("--workers", args.workers, 1),
                             ("--heartbeat", args.heartbeat, 1), ("--spike-episodes", args.spike_episodes, 1),
                             ("--prune-after", args.prune_after, 0)):
        if value < low:
            raise SpikerlError(f"{name} must be >= {low}, got {value}")
    space = load_space(args.space, args.param)
    validate_space(space, args.config, args.overrides)
    spec = TuneSpec(config=args.config, overrides=args.overrides, space=space, seeds=_seeds(args.seeds),
                    objectives=objectives, pruner=pruner, prune_after=args.prune_after,
                    spike_episodes=args.spike_episodes, population=args.population)
    name = args.study or Path(args.config).stem
    out = Path(args.out or f"runs/tune-{name}")
    study = tune(spec, args.storage, name, out, args.trials, args.workers, args.heartbeat, args.sampler_seed,
                 log=lambda line: print(line, flush=True))
    n = counts(study)
    table = write_trials_csv(study, out / "trials.csv")
    print(f"study {name!r}: {n['complete']} complete, {n['pruned']} pruned, {n['fail']} failed; trials: {table}")
    if n["complete"] + n["pruned"] < args.trials:
        raise SpikerlError(f"the study holds {n['complete'] + n['pruned']} of {args.trials} finished trials "
                           "(workers ended early); run the same command again to continue it")
    best = best_trial(study)
    preset = export_preset(study, best, Path(args.export) if args.export else out / "best.yaml")
    values = ", ".join(f"{o} {v:.2f}" for o, v in zip(objectives, best.values))
    print(f"best trial {best.number}: {values}\n  {best.params}\npreset: {preset}; retrain it with "
          f"`spikerl train {preset}`")
    return 0


def cmd_tune_export(args: argparse.Namespace) -> int:
    import optuna

    from spikerl.tune.storage import open_storage
    from spikerl.tune.study import best_trial, export_preset

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if "://" not in args.storage and not Path(args.storage).is_file():
        raise SpikerlError(f"study journal not found: {args.storage}")
    storage = open_storage(args.storage, Path("."), 30)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    name = args.study or (names[0] if len(names) == 1 else None)
    if name not in names:
        raise SpikerlError(f"{args.storage} holds the studies {names}; name one with --study" if args.study is None
                           else f"{args.storage} holds no study {args.study!r} (it holds {names})")
    study = optuna.load_study(study_name=name, storage=storage)
    trial = best_trial(study, args.trial)
    path = export_preset(study, trial, Path(args.output))
    print(f"trial {trial.number} of study {name!r}: {path}; retrain it with `spikerl train {path}`")
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
    sweep.add_argument("--workers", type=int, default=1, help="runs (or populations) at a time, one process and one "
                       "thread each")
    sweep.add_argument("--population", action="store_true", help="train the runs that share every shape as one "
                       "population per process, in lockstep (OUT/populations/p<i>); run folders stay as they are")
    sweep.add_argument("--storage", help="share the sweep's runs (or populations) with every process, on any machine, "
                       "running the same sweep with this storage: a database URL (postgresql://...) or a journal file")
    sweep.add_argument("--heartbeat", type=int, default=30,
                       help="database storage: seconds between heartbeats; a unit silent for 4 beats is handed out again")
    sweep.add_argument("--out", required=True, help="the sweep's folder")
    sweep.add_argument("--solved-at", type=float, help="a cell counts as solving the task at this mean final return")
    sweep.add_argument("--title")
    sweep.set_defaults(func=cmd_sweep)

    tune = sub.add_parser("tune", help="Optuna search (TPE, pruning) over spiking and RL hyperparameters", description=(
        "Search the space given by --space FILE and/or --param options. Each trial trains one run per seed; its value "
        "is the mean final evaluation return (and with --objective return,spikes the mean spikes per decision). "
        "The study lives in a journal file (default OUT/study.journal) or a database (--storage postgresql://...); "
        "the same command on another machine joins it. Running the command again continues the study."))
    tune.add_argument("config")
    tune.add_argument("overrides", nargs="*", help="key=value overrides applied to every trial")
    tune.add_argument("--space", help="YAML search space (see configs/spaces/)")
    tune.add_argument("--param", action="append", default=[], metavar="KEY=SPEC",
                      help="KEY=float:LOW:HIGH[:log][:per_layer], KEY=int:LOW:HIGH or KEY=choice:A,B")
    tune.add_argument("--trials", type=int, required=True, help="complete or pruned trials the study should hold")
    tune.add_argument("--seeds", default="0", help="comma-separated seeds; a trial's value is the mean over them")
    tune.add_argument("--objective", default="return", help="return (default) or return,spikes (multi-objective)")
    tune.add_argument("--pruner", choices=["median", "none"],
                      help="median (default with one objective) or none (the only choice with two)")
    tune.add_argument("--population", action="store_true",
                      help="train a trial's seeds as one population in lockstep (faster with several seeds); the "
                           "pruner then sees the mean over the seeds at each evaluation step")
    tune.add_argument("--prune-after", type=int, default=4, help="completed trials before pruning starts (default 4)")
    tune.add_argument("--storage", help="a journal file path or a database URL (default OUT/study.journal)")
    tune.add_argument("--study", help="study name (default: the config file's name)")
    tune.add_argument("--out", help="folder for the trials' runs, trials.csv and best.yaml (default runs/tune-STUDY)")
    tune.add_argument("--workers", type=int, default=1, help="local worker processes, one thread each")
    tune.add_argument("--heartbeat", type=int, default=30,
                      help="database storage: seconds between heartbeats; a trial silent for 4 beats is failed")
    tune.add_argument("--sampler-seed", type=int, help="seed TPE (worker i uses seed + i) for a repeatable search")
    tune.add_argument("--spike-episodes", type=int, default=2, help="evaluation episodes for counting spikes")
    tune.add_argument("--export", help="where to write the best trial's preset (default OUT/best.yaml)")
    tune.set_defaults(func=cmd_tune)

    export = sub.add_parser("tune-export", help="write a trial of a study (default: the best) as a preset config")
    export.add_argument("--storage", required=True, help="the study's journal file or database URL")
    export.add_argument("--study", help="the study's name (needed when the storage holds several)")
    export.add_argument("--trial", type=int, help="a trial number instead of the best trial")
    export.add_argument("-o", "--output", required=True, help="the preset YAML to write")
    export.set_defaults(func=cmd_tune_export)
