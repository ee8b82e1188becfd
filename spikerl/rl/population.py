"""Populations: agents that differ only in values that leave every tensor's shape alone, trained in lockstep.

    spikerl train CONFIG --seeds 0:8        seeds 0..7 of CONFIG as one population
    spikerl sweep ... --population           a sweep's runs that share shapes as populations

    POP_DIR/
      population.yaml    the agents' run folders (relative to POP_DIR)
      checkpoints/       step_<N>.pt: every agent in each (a population resumes as a whole)
      s0/ s1/ ...        (train --seeds) each agent's ordinary run folder: config.yaml trains that agent
                         alone; episodes.csv, eval.csv, tb/, final_model.pt, final_eval.json

An ordinary run is a population of one in its own folder. Agents may differ in the values of
`PER_AGENT_KEYS`; everything else (algorithm, environment, network shape, optimizer, schedule) is
shared, and a population whose agents differ elsewhere is refused with the first differing key.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from spikerl.config import MAX_SEED, TrainConfig, config_to_dict, critic_network, differing_settings, flatten_settings, load_config
from spikerl.errors import SpikerlError
from spikerl.fileio import atomic_write_text

# What agents of one population may differ in. Membrane values are drawn per agent into [K, 1, n]
# tensors; gamma, the exploration settings and the stopping rules are read per agent by the loop
# and the algorithms. Learning rates are shared: one Adam steps every agent (PPO's desired_kl then adapts
# each agent's policy rate on its own).
PER_AGENT_KEYS = (
    "seed", "run_dir",
    "network.neuron.alpha", "network.neuron.beta", "network.neuron.theta", "network.neuron.spread",
    "network.neuron.randomize", "network.readout_alpha", "network.readout_beta",
    "dqn.gamma", "dqn.epsilon_schedule", "dqn.epsilon_start", "dqn.epsilon_end", "dqn.epsilon_decay",
    "dqn.epsilon_decay_steps", "td3.gamma", "td3.exploration_noise", "sac.gamma", "sac.alpha", "ppo.gamma", "ppo.gae_lambda",
    "eval.stop_at_return", "total_episodes", "progress",
)
POPULATION_FILE = "population.yaml"


def shared_settings(cfg: TrainConfig) -> dict[str, object]:
    """Every setting agents of one population must share (dotted key -> value)."""
    return {k: v for k, v in flatten_settings(config_to_dict(cfg)).items() if k not in PER_AGENT_KEYS}


def check_population(cfgs: list[TrainConfig]) -> None:
    cfg = cfgs[0]
    if len(cfgs) > 1 and any(net is not None and net.draws_random_spikes for net in (cfg.network, critic_network(cfg))):
        raise SpikerlError("random input spikes (an encoder poisson, or population with population_spikes "
                           "poisson) are drawn from torch's global generator, which the agents of a population would "
                           "share: train these seeds as separate runs")
    shared = shared_settings(cfgs[0])
    for cfg in cfgs[1:]:
        other = shared_settings(cfg)
        differ = differing_settings(shared, other)
        if differ:
            raise SpikerlError(f"agents of one population may differ only in {', '.join(PER_AGENT_KEYS[2:])} and "
                               f"the seed; {cfg.run_dir} has {differ[0]} = {other.get(differ[0])!r}, "
                               f"{cfgs[0].run_dir} {shared.get(differ[0])!r}")


def parse_seeds(text: str) -> list[int]:
    """`0:8` (0..7), `3:5`, or a comma list `0,2,7`."""
    try:
        if ":" in text:
            start, stop = (int(part) for part in text.split(":"))
            if start < stop and not (0 <= start and stop - 1 <= MAX_SEED):  # checked before the range is built
                raise SpikerlError(f"--seeds {text!r}: seeds must be in [0, {MAX_SEED}] (NumPy's seed range)")
            seeds = list(range(start, stop))
        else:
            seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SpikerlError(f"--seeds must look like 0:8 (seeds 0 to 7) or 0,1,2, got {text!r}") from None
    return checked_seeds(seeds, text)


def checked_seeds(seeds: list[int], text: str) -> list[int]:
    """`seeds`, parsed from the command line's `text`, if they name at least one seed, none twice, all in
    NumPy's range."""
    if not seeds:
        raise SpikerlError(f"--seeds {text!r} names no seed")
    if len(set(seeds)) != len(seeds):
        raise SpikerlError(f"--seeds {text!r} names a seed twice")
    outside = [seed for seed in seeds if not 0 <= seed <= MAX_SEED]
    if outside:
        raise SpikerlError(f"--seeds {text!r}: seeds must be in [0, {MAX_SEED}] (NumPy's seed range), got {outside[0]}")
    return seeds


def is_population(path: Path) -> bool:
    return (Path(path) / POPULATION_FILE).is_file()


def refuse_population_folder(path: Path, wanted: str = "one agent's run folder") -> None:
    """One line naming the agents' folders where a command that takes a run folder was given a population's."""
    path = Path(path)
    if is_population(path) and not (path / "config.yaml").is_file():
        agents = ", ".join(str(agent) for agent in read_population(path))
        raise SpikerlError(f"{path} holds a population; give {wanted}: {agents}")


def write_population(home: Path, agent_dirs: list[Path]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    agents = [str(Path(d).resolve().relative_to(home.resolve())) if Path(d).resolve().is_relative_to(home.resolve())
              else str(Path(d).resolve()) for d in agent_dirs]
    atomic_write_text(home / POPULATION_FILE, yaml.safe_dump({"agents": agents}, sort_keys=False))


def read_population(home: Path) -> list[Path]:
    try:
        data = yaml.safe_load((home / POPULATION_FILE).read_text())
        return [home / agent for agent in data["agents"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise SpikerlError(f"{home / POPULATION_FILE} is unreadable: {exc}") from None


def seed_configs(cfg: TrainConfig, seeds: list[int], home: Path) -> list[TrainConfig]:
    """One config per seed: the same settings, run folders home/s<seed>."""
    import copy

    cfgs = []
    for seed in seeds:
        agent = copy.deepcopy(cfg)
        agent.seed, agent.run_dir = seed, str(home / f"s{seed}")
        cfgs.append(agent)
    return cfgs


def train_population(home: Path, cfgs: list[TrainConfig] | None = None, overrides: list[str] = (),
                     eval_listeners: list | None = None) -> list[dict | None]:
    """Train a new population of `cfgs` in `home`, or (cfgs None) resume the one there with `overrides`
    (those a resumed run accepts). Returns each agent's final result (None: finished before).
    `eval_listeners[k](step, result)` hears agent k's periodic evaluations (`spikerl tune`'s pruner)."""
    from spikerl.rl import algorithm_module
    from spikerl.rl.run import CheckpointStore, Run, _lock_run_folder, run_finished

    resume = cfgs is None
    if resume:
        agent_dirs = read_population(home)
        cfgs = [resume_config(d, overrides) for d in agent_dirs]
    else:
        if is_population(home) or (home.exists() and any(home.iterdir())):
            raise SpikerlError(f"{home} already exists and is not empty; choose another run_dir or continue it with "
                               f"`spikerl train --resume {home}`")
        agent_dirs = [Path(cfg.run_dir) for cfg in cfgs]
    for cfg in cfgs:
        resolve_run_choices(cfg)
    check_population(cfgs)
    if cfgs[0].threads:
        import torch

        torch.set_num_threads(cfgs[0].threads)
    if not resume:
        write_population(home, agent_dirs)
    lock = _lock_run_folder(home)
    runs: list[Run | None] = []
    try:
        for k, (cfg, agent_dir) in enumerate(zip(cfgs, agent_dirs)):
            done = resume and (run_finished(agent_dir) or (agent_dir / "diverged.json").is_file())
            runs.append(None if done else Run(cfg, resume=resume))
            if runs[k] is not None and eval_listeners is not None:
                runs[k].eval_listeners.append(eval_listeners[k])
        if all(run is None for run in runs):
            print(f"{home}: every agent finished already; nothing to resume", file=sys.stderr)
            return [None] * len(runs)
        store = CheckpointStore(home / "checkpoints", cfgs[0].keep_checkpoints)
        checkpoint = store.latest_good(home) if resume else None
        if resume and checkpoint is None:
            print(f"spikerl: {home} has no checkpoint yet; training it again from step 0", file=sys.stderr)
        print(f"population of {len(cfgs)} agents in {home}", file=sys.stderr)
        return algorithm_module(cfgs[0].algo).train(cfgs, runs, store, checkpoint)
    finally:
        for run in runs:
            if run is not None:
                run.close()
        if lock is not None:
            lock.close()


RESUMABLE_OVERRIDES = ("total_steps", "total_episodes", "progress", "threads", "checkpoint_every", "keep_checkpoints",
                       "video.every", "video.episodes", "video.raster", "video.fps")


def is_bookkeeping(key: str) -> bool:
    """Settings that say where and how a run was kept or computed, not what it trained: seeds of one variant
    may differ in them (the device and `auto` backends are resolved on each machine, and the backends give
    the same spikes). What a resume may change, except the budget (total_steps, total_episodes)."""
    return (key in ("seed", "run_dir", "device") or key.endswith(".backend")
            or (key in RESUMABLE_OVERRIDES and not key.startswith("total_")))


def resume_config(run_dir: Path, overrides: list[str]) -> TrainConfig:
    """The run's own resolved config, with only the overrides that leave its past steps valid."""
    from spikerl.config import parse_override

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise SpikerlError(f"cannot resume {run_dir}: " + ("run folder not found" if not run_dir.is_dir()
                                                            else "not a spikerl run folder (no config.yaml)"))
    for text in overrides:
        key = parse_override(text)[0]
        if key not in RESUMABLE_OVERRIDES:
            raise SpikerlError(f"cannot change {key} when resuming; a resumed run may only change "
                               f"{', '.join(RESUMABLE_OVERRIDES)}")
    return load_config(config_path, [*overrides, f"run_dir={run_dir}"], stored=True)


def resolve_run_choices(cfg: TrainConfig) -> None:
    """Resolve `device` and every `backend: auto` once, before the run folder is written, so its config.yaml
    records what this run uses (a resumed run and `spikerl train RUN/config.yaml` use the same)."""
    from spikerl.devices import resolve_device
    from spikerl.snn.backends import resolve_backend

    device = resolve_device(cfg.device)
    cfg.device = str(device)
    for net in (cfg.network, critic_network(cfg)):
        if net is not None and net.kind == "snn":
            net.backend = resolve_backend(net.backend, device)
