"""Deterministic evaluation: N episodes of a fresh environment, episode i seeded with seed + i."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from spikerl.errors import SpikerlError
from spikerl.rl.envs import make_env


class EpisodeObserver:
    """Watches an evaluation: `start` after each reset, `step` after each environment step (for videos)."""

    def start(self, env, episode: int) -> None: ...

    def step(self, env, episode: int, action, episode_return: float) -> None: ...


@contextmanager
def own_random_spikes(seed: int):
    """Random input spikes (poisson encoders) drawn during an evaluation come from torch's generators seeded
    with the evaluation's seed and put back afterwards: the same evaluation (seed and episodes) sees the same
    spikes, and training's draws do not depend on when, or whether, it evaluated."""
    import torch

    # CUDA's generators only where CUDA already runs (a policy on the GPU has started it): forking them
    # would start CUDA in every CPU evaluation
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        torch.manual_seed(seed)
        yield


def evaluate(act: Callable[[np.ndarray], np.ndarray | int], env_id: str, episodes: int, seed: int,
             observer: EpisodeObserver | None = None, render_mode: str | None = None,
             env_kwargs: dict | None = None) -> dict:
    """Run `act` (observation -> action, no exploration) in `env_id` made with `env_kwargs` and summarize the
    episode returns."""
    with own_random_spikes(seed):
        env = make_env(env_id, render_mode=render_mode, env_kwargs=env_kwargs)
        returns, lengths = [], []
        try:
            for i in range(episodes):
                obs, _ = env.reset(seed=seed + i)
                total, length, done = 0.0, 0, False
                if observer is not None:
                    observer.start(env, i)
                while not done:
                    action = act(obs)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += float(reward)
                    length += 1
                    done = terminated or truncated
                    if observer is not None:
                        observer.step(env, i, action, total)
                returns.append(total)
                lengths.append(length)
        finally:
            env.close()
        return summarize(env_id, episodes, seed, returns, lengths)


def visited_states(policy, env, count: int, seed: int, exploration_std: float) -> np.ndarray:
    """`count` observations of `policy` acting in `env` (its deterministic action plus Gaussian noise of std
    `exploration_std`, clipped to the action box), from a reset seeded with `seed`: states around the ones it
    visits, for the diagnostics in benchmarks/."""
    noise = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    states = np.empty((count, obs.shape[0]), dtype=np.float32)
    for i in range(count):
        states[i] = obs
        action = policy.act(obs)
        action = np.clip(action + exploration_std * noise.standard_normal(action.shape),
                         env.action_space.low, env.action_space.high)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    return states


def evaluate_agents(policy, agents: list[int], population: int, env_id: str, episodes: int, seed: int,
                    device, env_kwargs: dict | None = None) -> list[dict]:
    """`evaluate` for agents of a stacked policy at once: agent j plays its episodes (episode i seeded
    seed + i) in an environment of its own, all of them acting through one forward pass per step
    (`policy.act_agents(obs [K, 1, d])`; rows of agents not evaluated are zeros). Each agent's result is
    what `evaluate` gives for that agent's own policy (tested)."""
    import torch

    with own_random_spikes(seed):
        envs = {k: make_env(env_id, env_kwargs=env_kwargs) for k in agents}
        obs_dim = next(iter(envs.values())).observation_space.shape[0] if envs else 0
        obs = np.zeros((population, obs_dim), dtype=np.float32)
        returns = {k: [] for k in agents}
        lengths = {k: [] for k in agents}
        totals = dict.fromkeys(agents, 0.0)
        steps = dict.fromkeys(agents, 0)
        try:
            for k, env in envs.items():
                obs[k] = env.reset(seed=seed)[0]
            playing = set(agents) if episodes > 0 else set()
            while playing:
                actions = policy.act_agents(torch.as_tensor(obs, device=device).unsqueeze(1))
                for k in sorted(playing):
                    next_obs, reward, terminated, truncated, _ = envs[k].step(actions[k])
                    totals[k] += float(reward)
                    steps[k] += 1
                    if not (terminated or truncated):
                        obs[k] = next_obs
                        continue
                    returns[k].append(totals[k])
                    lengths[k].append(steps[k])
                    totals[k], steps[k] = 0.0, 0
                    if len(returns[k]) == episodes:
                        playing.discard(k)
                    else:
                        obs[k] = envs[k].reset(seed=seed + len(returns[k]))[0]
        finally:
            for env in envs.values():
                env.close()
        return [summarize(env_id, episodes, seed, returns[k], lengths[k]) for k in agents]


def summarize(env_id: str, episodes: int, seed: int, returns: list[float], lengths: list[int]) -> dict:
    r = np.asarray(returns)
    return {
        "env_id": env_id, "episodes": episodes, "seed": seed,
        "mean_return": float(r.mean()), "std_return": float(r.std()),
        "min_return": float(r.min()), "max_return": float(r.max()),
        "mean_length": float(np.mean(lengths)), "returns": [float(x) for x in r],
    }


def _agent_state(stacked: dict, agents: list[str], run_dir: Path, shapes: dict, checkpoint) -> dict:
    """The run's own policy state from a checkpoint, which holds its population's agents stacked."""
    mine = [i for i, agent in enumerate(agents) if Path(agent).resolve() == run_dir.resolve()]
    if not mine:
        mine = [i for i, agent in enumerate(agents) if Path(agent).name == run_dir.name]  # a moved population
    if len(agents) != 1 and len(mine) != 1:
        raise SpikerlError(f"checkpoint {checkpoint} holds agents {', '.join(agents)}, not {run_dir}")
    index = mine[0] if mine else 0
    try:
        return {key: value[index].reshape(shapes[key].shape) for key, value in stacked.items()}
    except (KeyError, RuntimeError) as exc:
        raise SpikerlError(f"the weights in {checkpoint} do not fit the network the config of {run_dir} describes: "
                           f"{str(exc).splitlines()[0]}") from None


TRAIN_AVERAGE_WINDOW = 100  # training episodes: the paper's released code reports this moving average


def best_moving_average(returns: list[float], window: int = TRAIN_AVERAGE_WINDOW) -> tuple[float, int] | None:
    """The best mean of `window` consecutive training returns and the episode (counted from 1) that ends
    that window; None with fewer than `window` episodes."""
    if len(returns) < window:
        return None
    means = np.lib.stride_tricks.sliding_window_view(np.asarray(returns, dtype=np.float64), window).mean(axis=1)
    best = int(np.argmax(means))  # the first window that reaches the best mean
    return float(means[best]), best + window


def load_policy(run_dir: Path, checkpoint: str | None = None, backend: str = "auto", device: str = "cpu"):
    """The run's config and its trained policy (final model, or the given checkpoint), ready to act on
    `device`, its spiking layers on `backend` (whatever backend it was trained with)."""
    from spikerl.config import config_from_dict
    from spikerl.devices import resolve_device
    from spikerl.rl import algorithm_module
    from spikerl.rl.checkpoint import load_checkpoint
    from spikerl.rl.population import refuse_population_folder

    if not run_dir.is_dir():
        raise SpikerlError(f"run folder not found: {run_dir}")
    refuse_population_folder(run_dir)
    final = load_checkpoint(run_dir / "final_model.pt") if checkpoint is None else None
    if final is not None:
        cfg_data = final["config"]
    else:
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise SpikerlError(f"{run_dir} has no config.yaml; is it a spikerl run folder?")
        cfg_data = yaml.safe_load(config_path.read_text())
    cfg = config_from_dict(cfg_data, stored=True)
    torch_device = resolve_device(device)
    cfg.device = str(torch_device)
    cfg.network.backend = backend  # build_network resolves it for the device
    algorithm = algorithm_module(cfg.algo)
    env = make_env(cfg.env_id, cfg.algo, env_kwargs=cfg.env_kwargs)
    policy = algorithm.make_policy(cfg, env, torch_device)
    env.close()
    if final is not None:
        state = final["policy"]
    else:
        data = load_checkpoint(Path(checkpoint))
        stacked = data.get("components", {}).get("q_net" if cfg.algo == "dqn" else "actor")
        if stacked is None:
            raise SpikerlError(f"checkpoint {checkpoint} holds no {cfg.algo} policy")
        state = _agent_state(stacked, data.get("agents", []), run_dir, policy.state_dict(), checkpoint)
    try:
        policy.load_state_dict(state)
    except RuntimeError as exc:
        raise SpikerlError(f"the weights in {run_dir} do not fit the network its config describes: "
                           f"{str(exc).splitlines()[0]}") from None
    policy.eval()
    return cfg, policy
