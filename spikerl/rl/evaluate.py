"""Deterministic evaluation: N episodes of a fresh environment, episode i seeded with seed + i."""

from __future__ import annotations

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


def evaluate(act: Callable[[np.ndarray], np.ndarray | int], env_id: str, episodes: int, seed: int,
             observer: EpisodeObserver | None = None, render_mode: str | None = None) -> dict:
    """Run `act` (observation -> action, no exploration) and summarize the episode returns."""
    env = make_env(env_id, render_mode=render_mode)
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
    r = np.asarray(returns)
    return {
        "env_id": env_id, "episodes": episodes, "seed": seed,
        "mean_return": float(r.mean()), "std_return": float(r.std()),
        "min_return": float(r.min()), "max_return": float(r.max()),
        "mean_length": float(np.mean(lengths)), "returns": [float(x) for x in r],
    }


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

    if not run_dir.is_dir():
        raise SpikerlError(f"run folder not found: {run_dir}")
    final = load_checkpoint(run_dir / "final_model.pt") if checkpoint is None else None
    if final is not None:
        cfg_data = final["config"]
    else:
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise SpikerlError(f"{run_dir} has no config.yaml; is it a spikerl run folder?")
        cfg_data = yaml.safe_load(config_path.read_text())
    cfg = config_from_dict(cfg_data)
    torch_device = resolve_device(device)
    cfg.device = str(torch_device)
    cfg.network.backend = backend  # build_network resolves it for the device
    algorithm = algorithm_module(cfg.algo)
    env = make_env(cfg.env_id, cfg.algo)
    policy = algorithm.make_policy(cfg, env, torch_device)
    env.close()
    if final is not None:
        state = final["policy"]
    else:
        data = load_checkpoint(Path(checkpoint))
        state = data.get("components", {}).get("q_net" if cfg.algo == "dqn" else "actor")
        if state is None:
            raise SpikerlError(f"checkpoint {checkpoint} holds no {cfg.algo} policy")
    try:
        policy.load_state_dict(state)
    except RuntimeError as exc:
        raise SpikerlError(f"the weights in {run_dir} do not fit the network its config describes: "
                           f"{str(exc).splitlines()[0]}") from None
    policy.eval()
    return cfg, policy
