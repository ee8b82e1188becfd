"""`spikerl train`, `eval`, `export`, `energy`, `video`, `plot` and `summary`: commands on single runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spikerl.errors import SpikerlError


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from spikerl.config import load_config
    from spikerl.rl import train_run
    from spikerl.rl.envs import check_environment
    from spikerl.rl.population import (is_population, parse_seeds, resolve_run_choices, resume_config, seed_configs,
                                       train_population)
    from spikerl.rl.run import Run, default_run_dir

    overrides = args.overrides
    if args.resume:
        # `spikerl train --resume RUN key=value`: argparse files the first override under `config`.
        overrides = [args.config, *args.overrides] if args.config else args.overrides
        if args.seeds:
            raise SpikerlError("--seeds starts a population; a resumed population keeps its own seeds")
        if is_population(Path(args.resume)):
            return _report(train_population(Path(args.resume), None, overrides))
        cfg = resume_config(Path(args.resume), overrides)
    elif args.config is None:
        raise SpikerlError("train needs a config file, or --resume RUN_DIR")
    else:
        cfg = load_config(args.config, overrides)
    if cfg.video.every:
        from spikerl.video.record import prepare_rendering

        prepare_rendering(cfg.env_id, cfg.env_kwargs)  # no encoder or OpenGL: one line now, not a failure mid-run
    check_environment(cfg)  # fail on a wrong environment before a run folder exists
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if args.seeds:
        seeds = parse_seeds(args.seeds)
        home = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg, f"seeds{seeds[0]}-{seeds[-1]}")
        return _report(train_population(home, seed_configs(cfg, seeds, home)))
    resolve_run_choices(cfg)
    run = Run(cfg, resume=bool(args.resume))
    checkpoint = None
    if args.resume:
        if run.finished():
            print(f"{run.dir} finished already (final_eval.json is there); nothing to resume", file=sys.stderr)
            return 0
        checkpoint = run.latest_good_checkpoint()
        if checkpoint is None:
            print(f"spikerl: {run.dir} has no checkpoint yet; training it again from step 0", file=sys.stderr)
    print(f"run folder: {run.dir}", file=sys.stderr)
    result = train_run(cfg, run, checkpoint)
    if result is None:  # its checkpoint says it had stopped already
        print(f"{run.dir} had stopped at its checkpoint; nothing to resume", file=sys.stderr)
        return 0
    print(f"final evaluation ({result['episodes']} deterministic episodes, seeds {result['seed']}..."
          f"{result['seed'] + result['episodes'] - 1}): mean return {result['mean_return']:.1f} "
          f"+- {result['std_return']:.1f} after {result['global_step']} steps in {result['wall_time_s']:.0f} s "
          f"({result['steps_per_second']:.0f} steps/s); results in {run.dir}")
    if result["best_train_average"] is not None:
        print(f"best 100-episode average of training returns: {result['best_train_average']:.1f}, reached at "
              f"episode {result['best_train_average_episode']} of {result['train_episodes']}")
    return 0


def _report(results: list[dict | None]) -> int:
    """One line per agent of a population, then the mean over those that finished; status 1 if any diverged."""
    import numpy as np

    finished = [r for r in results if r and "mean_return" in r]
    diverged = [r for r in results if r and "diverged" in r]
    for r in finished:
        print(f"{r['run_dir']}: final evaluation mean return {r['mean_return']:.1f} +- {r['std_return']:.1f} after "
              f"{r['global_step']} steps" + (f"; best 100-episode training average {r['best_train_average']:.1f}"
                                             if r["best_train_average"] is not None else ""))
    for r in diverged:
        print(f"{r['run_dir']}: {r['diverged']}")
    if finished:
        returns = np.array([r["mean_return"] for r in finished])
        wall = max(r["wall_time_s"] for r in finished)
        steps = sum(r["global_step"] for r in finished)
        print(f"{len(finished)} agents: mean final return {returns.mean():.1f} (std over agents {returns.std():.1f}, "
              f"min {returns.min():.1f}, max {returns.max():.1f}); {steps} agent-steps in {wall:.0f} s "
              f"({steps / max(wall, 1e-9):.0f} agent-steps/s)")
    return 1 if diverged else 0


def _load_any_policy(source: Path, args: argparse.Namespace):
    """(config, policy) from a run folder (final model or a checkpoint) or a NIR file, on --backend and --device."""
    if source.suffix == ".nir":
        from spikerl.deploy.nir_io import load_nir_policy

        return load_nir_policy(source, args.env, args.backend, args.device)
    from spikerl.rl.evaluate import load_policy

    return load_policy(source, args.checkpoint, args.backend, args.device)


def _check_other_env(cfg, env_id: str | None) -> None:
    """A policy may run in another environment (--env) only if its observation and action spaces match."""
    from spikerl.rl.envs import make_env

    if not env_id or env_id == cfg.env_id:
        return
    trained, other = make_env(cfg.env_id, cfg.algo, env_kwargs=cfg.env_kwargs), make_env(env_id, cfg.algo)
    spaces = [(e.observation_space.shape, getattr(e.action_space, "shape", None), getattr(e.action_space, "n", None))
              for e in (trained, other)]
    trained.close()
    other.close()
    if spaces[0] != spaces[1]:
        raise SpikerlError(f"{env_id} has other observation or action spaces than {cfg.env_id}, "
                           "which the policy was trained on")


def _check_episodes_and_seed(args: argparse.Namespace) -> None:
    from spikerl.config import MAX_SEED

    if args.episodes < 1:
        raise SpikerlError(f"--episodes must be >= 1, got {args.episodes}")
    if not 0 <= args.seed <= MAX_SEED:  # episode i resets with seed + i
        raise SpikerlError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")


def cmd_eval(args: argparse.Namespace) -> int:
    from spikerl.rl.envs import env_kwargs_for
    from spikerl.rl.evaluate import evaluate

    _check_episodes_and_seed(args)
    source = Path(args.run_dir)
    spec = None
    if args.quantize:
        from spikerl.deploy.quantize import QuantizationSpec, quantized_policy

        spec = QuantizationSpec(args.weight_bits, args.decay_bits, args.state_bits)
    cfg, policy = _load_any_policy(source, args)
    _check_other_env(cfg, args.env)
    env_id = args.env or cfg.env_id
    env_kwargs = env_kwargs_for(env_id, cfg.env_id, cfg.env_kwargs)
    result = evaluate(policy.act, env_id, args.episodes, args.seed, env_kwargs=env_kwargs)
    if spec is not None:
        fixed = evaluate(quantized_policy(policy, spec).act, env_id, args.episodes, args.seed, env_kwargs=env_kwargs)
        result = {"float": result, "quantized": fixed, "quantization": spec.as_dict()}
        print(f"{env_id}, {args.episodes} episodes: float mean return {result['float']['mean_return']:.1f} "
              f"+- {result['float']['std_return']:.1f}; fixed point ({spec.describe()}) "
              f"{fixed['mean_return']:.1f} +- {fixed['std_return']:.1f}", file=sys.stderr)
    text = json.dumps(result, indent=2)
    default_out = source.with_suffix(".eval.json") if source.is_file() else source / "eval.json"
    out = Path(args.output) if args.output else default_out
    out.write_text(text)
    print(text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from spikerl.deploy.nir_io import policy_to_nir, write_nir
    from spikerl.rl.evaluate import load_policy

    cfg, policy = load_policy(Path(args.run_dir), args.checkpoint, args.backend, args.device)
    graph = policy_to_nir(cfg, policy)
    out = Path(args.output)
    write_nir(graph, out)
    hidden = [n for n in graph.nodes if n.startswith("lif")]
    print(f"wrote {out}: NIR graph of {len(graph.nodes)} nodes ({len(hidden)} CubaLIF layers, readout "
          f"{type(graph.nodes['readout']).__name__}), T = {graph.metadata['timesteps']} steps per decision, dt = "
          f"{graph.metadata['dt']}; run it with `spikerl eval {out}`")
    return 0


def cmd_energy(args: argparse.Namespace) -> int:
    from spikerl.deploy.energy import check_energy_applies, measure_activity, plot_raster
    from spikerl.rl.envs import env_kwargs_for

    _check_episodes_and_seed(args)
    if args.raster_decisions < 1:
        raise SpikerlError(f"--raster-decisions must be >= 1, got {args.raster_decisions}")
    for name, value in (("--e-ac", args.e_ac), ("--e-mac", args.e_mac)):
        if not value > 0:
            raise SpikerlError(f"{name} is an energy per operation in pJ and must be > 0, got {value}")
    source = Path(args.run_dir)
    cfg, policy = _load_any_policy(source, args)
    try:
        check_energy_applies(policy.net)
        env_id = args.env or cfg.env_id
        report, result, recorder = measure_activity(policy, env_id, args.episodes, args.seed, args.raster_decisions,
                                                    args.e_ac, args.e_mac,
                                                    env_kwargs_for(env_id, cfg.env_id, cfg.env_kwargs))
    except SpikerlError as exc:
        raise SpikerlError(f"{source}: {exc}") from None
    net = policy.net
    rates = ", ".join(f"{r:.3f}" for r in report.spikes_per_neuron_per_step)
    print(f"{cfg.env_id}, {report.decisions} decisions over {args.episodes} episode(s) (mean return "
          f"{result['mean_return']:.1f}), T = {net.timesteps}, hidden {report.layer_sizes}\n"
          f"  spikes per neuron per step, by layer: {rates}\n"
          f"  spikes per decision: {report.spikes_per_decision:.1f}\n"
          f"  synaptic operations (accumulates) per decision: {report.synaptic_ops_per_decision:.0f} "
          f"+ {report.input_macs_per_decision} input MACs\n"
          f"  ANN twin multiply-accumulates per decision: {report.ann_macs_per_decision}\n"
          f"  energy per decision at {args.e_ac} pJ/AC, {args.e_mac} pJ/MAC: SNN {report.snn_energy_pj / 1e3:.2f} nJ, "
          f"ANN {report.ann_energy_pj / 1e3:.2f} nJ (ANN / SNN = {report.ann_energy_pj / report.snn_energy_pj:.2f})")
    if args.raster and recorder.kept:
        plot_raster(recorder.kept, net.timesteps, args.raster, f"{cfg.env_id}: hidden spikes, first {len(recorder.kept)} decisions")
        print(f"  spike raster: {args.raster}")
    if args.output:
        Path(args.output).write_text(json.dumps({**report.as_dict(), "mean_return": result["mean_return"]}, indent=2))
    return 0


def _env_and_kind(source: Path) -> tuple[str | None, dict, str]:
    """The environment a run folder or NIR file was trained on, its env_kwargs and its network kind, read
    without building anything (so that MuJoCo's OpenGL can still be chosen)."""
    import yaml

    from spikerl.rl.population import refuse_population_folder

    if source.suffix == ".nir":
        from spikerl.deploy.nir_io import nir_metadata, stored_config

        meta = nir_metadata(source)
        return meta.get("env_id"), stored_config(meta).get("env_kwargs") or {}, "snn"
    refuse_population_folder(source)
    config_path = source / "config.yaml"
    if not config_path.is_file():
        raise SpikerlError(f"run folder not found: {source}" if not source.is_dir()
                           else f"{source} has no config.yaml; is it a spikerl run folder?")
    config = yaml.safe_load(config_path.read_text())
    return config["env_id"], config.get("env_kwargs") or {}, config.get("network", {}).get("kind", "snn")


def cmd_video(args: argparse.Namespace) -> int:
    from spikerl.rl.envs import env_kwargs_for
    from spikerl.video.record import prepare_rendering, write_video

    _check_episodes_and_seed(args)
    if args.fps is not None and args.fps <= 0:
        raise SpikerlError(f"--fps must be > 0, got {args.fps}")
    source = Path(args.run_dir)
    if args.checkpoint and source.suffix == ".nir":
        raise SpikerlError("--checkpoint picks a checkpoint of a run folder; a NIR file holds one network")
    trained_env, trained_env_kwargs, kind = _env_and_kind(source)
    if args.raster and kind == "ann":
        raise SpikerlError("--raster shows the hidden spikes of a spiking network; this policy is an ANN")
    default_out = source.with_suffix(".mp4") if source.is_file() else source / "policy.mp4"
    out = Path(args.output) if args.output else default_out
    if out.is_dir():
        raise SpikerlError(f"{out} is a folder; -o takes the MP4 file to write")
    env_id = args.env or trained_env
    if not env_id:
        raise SpikerlError(f"{source} does not name its environment; give it with --env")
    # Before anything imports MuJoCo, which reads the OpenGL choice once.
    prepare_rendering(env_id, env_kwargs_for(env_id, trained_env, trained_env_kwargs))
    cfg, policy = _load_any_policy(source, args)
    _check_other_env(cfg, args.env)
    info = write_video(policy, env_id, out, args.episodes, args.seed, args.raster, args.fps, shadows=args.shadows,
                       env_kwargs=env_kwargs_for(env_id, cfg.env_id, cfg.env_kwargs))
    returns = ", ".join(f"{r:.1f}" for r in info["returns"])
    print(f"wrote {out}: {info['frames']} frames of {env_id} ({info['episodes']} episode(s), returns {returns}) at "
          f"{info['fps']:g} fps, {info['bytes'] / 1e6:.2f} MB; rendered{' with spikes' if args.raster else ''} at "
          f"{info['frames_per_second_made']:.0f} frames/s")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from spikerl.plot import plot_runs

    path = plot_runs([Path(p) for p in args.run_dirs], Path(args.output), args.title)
    print(f"wrote {path}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from spikerl.plot import summarize_runs

    print(summarize_runs([Path(p) for p in args.run_dirs]))
    return 0


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    import typing

    from spikerl.config import NetworkConfig

    parser.add_argument("--backend", default="auto", choices=typing.get_args(typing.get_type_hints(NetworkConfig)["backend"]),
                        help="compute the spiking layers with this backend, whatever the run trained with (default auto: "
                             "native on a CPU that can build it, else fused)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")


def add_commands(sub) -> None:
    from spikerl.rl.population import RESUMABLE_OVERRIDES

    train = sub.add_parser("train", help="train an agent from a YAML config, or resume a run", description=(
        "Train an agent. Overrides are dotted keys, e.g. network.neuron.theta=0.5 seed=1 network.kind=ann. "
        "With --resume RUN_DIR, continue a stopped run from its newest good checkpoint."))
    train.add_argument("config", nargs="?", help="YAML config (see configs/)")
    train.add_argument("overrides", nargs="*", help="key=value overrides of config fields")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run folder (or population folder) from its "
                       f"newest good checkpoint (overrides allowed: {', '.join(RESUMABLE_OVERRIDES)})")
    train.add_argument("--seeds", metavar="SEEDS", help="train these seeds as one population in lockstep, one process "
                       "(0:8 is seeds 0 to 7; or 0,3,5): folders RUN_DIR/s<seed>, checkpoints in RUN_DIR/checkpoints")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a trained run (or a NIR file) deterministically, JSON out")
    ev.add_argument("run_dir", help="a run folder, or a .nir file made by `spikerl export`")
    ev.add_argument("--episodes", type=int, default=20)
    ev.add_argument("--seed", type=int, default=10_000, help="episode i uses seed + i")
    ev.add_argument("--checkpoint", help="a checkpoint file instead of the run's final model")
    ev.add_argument("--env", help="evaluate in this environment instead of the run's")
    ev.add_argument("-o", "--output", help="JSON file (default RUN_DIR/eval.json, or FILE.eval.json for a NIR file)")
    ev.add_argument("--quantize", action="store_true",
                    help="also evaluate the network in Loihi-like fixed point, reported next to the float return")
    ev.add_argument("--weight-bits", type=int, default=8, help="with --quantize: signed weight bits per layer")
    ev.add_argument("--decay-bits", type=int, default=12, help="with --quantize: decays on a 1/2^bits grid")
    ev.add_argument("--state-bits", type=int, default=24, help="with --quantize: integer current and voltage bits")
    _add_backend_options(ev)
    ev.set_defaults(func=cmd_eval)

    export = sub.add_parser("export", help="write a trained spiking policy as a NIR graph")
    export.add_argument("run_dir")
    export.add_argument("--format", choices=["nir"], default="nir")
    export.add_argument("--checkpoint", help="a checkpoint file instead of the run's final model")
    export.add_argument("-o", "--output", default="policy.nir")
    _add_backend_options(export)
    export.set_defaults(func=cmd_export)

    energy = sub.add_parser("energy", help="spikes, synaptic operations and an energy estimate against the ANN twin")
    energy.add_argument("run_dir", help="a run folder, or a .nir file")
    energy.add_argument("--episodes", type=int, default=1)
    energy.add_argument("--seed", type=int, default=10_000)
    energy.add_argument("--checkpoint")
    energy.add_argument("--env")
    energy.add_argument("--e-ac", type=float, default=0.9, help="pJ per accumulate (default: 45 nm, 32-bit float add)")
    energy.add_argument("--e-mac", type=float, default=4.6, help="pJ per multiply-accumulate (default: 45 nm, 32-bit float)")
    energy.add_argument("--raster", help="PNG of the hidden spikes over the first decisions")
    energy.add_argument("--raster-decisions", type=int, default=40)
    energy.add_argument("-o", "--output", help="JSON file with the counts")
    _add_backend_options(energy)
    energy.set_defaults(func=cmd_energy)

    video = sub.add_parser("video", help="an MP4 of deterministic evaluation episodes, optionally with the hidden spikes")
    video.add_argument("run_dir", help="a run folder, or a .nir file")
    video.add_argument("-o", "--output", help="MP4 file (default RUN_DIR/policy.mp4, or FILE.mp4 for a NIR file)")
    video.add_argument("--episodes", type=int, default=1)
    video.add_argument("--seed", type=int, default=10_000, help="episode i uses seed + i (as spikerl eval)")
    video.add_argument("--raster", action="store_true",
                       help="beside each frame: the hidden spikes of this decision and of the last ones, and the actions")
    video.add_argument("--fps", type=float, help="playback frames per second (default: the environment's)")
    video.add_argument("--shadows", action="store_true",
                       help="MuJoCo: draw shadows and reflections (several times slower on software OpenGL)")
    video.add_argument("--checkpoint", help="a checkpoint file instead of the run's final model")
    video.add_argument("--env", help="render this environment instead of the run's")
    _add_backend_options(video)
    video.set_defaults(func=cmd_video)

    plot = sub.add_parser("plot", help="learning curves of runs, per variant (runs that differ only in seed) the mean and band over seeds, to PNG")
    plot.add_argument("run_dirs", nargs="+")
    plot.add_argument("-o", "--output", default="curves.png")
    plot.add_argument("--title")
    plot.set_defaults(func=cmd_plot)

    summary = sub.add_parser("summary", help="a Markdown table of final and best evaluation returns and wall times, per run and per variant")
    summary.add_argument("run_dirs", nargs="+")
    summary.set_defaults(func=cmd_summary)
