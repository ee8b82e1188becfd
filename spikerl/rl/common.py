"""What DQN and TD3 share around their updates: seeding, progress, periodic evaluation, checkpoints."""

from __future__ import annotations

import os
import random
import resource
import sys
import time
from collections import deque
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from spikerl.config import TrainConfig
from spikerl.rl.evaluate import evaluate
from spikerl.rl.run import Run


def seed_everything(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """Seed Python, NumPy and torch; return the run's NumPy generator and the membrane-draw generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def resident_memory_mib() -> float | None:
    """This process's resident memory (Linux /proc; None elsewhere), for the memory curve in TensorBoard."""
    try:
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def as_obs_tensor(obs: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device).unsqueeze(0)


class TrainingLoop:
    """Episode bookkeeping, progress bar, evaluations and checkpoints for one run.

    The algorithm calls `episode_done` when an episode ends and `after_step` after every environment
    step; `after_step` returns True when training should stop (a periodic evaluation reached
    `eval.stop_at_return`).
    """

    def __init__(self, cfg: TrainConfig, run: Run, act: Callable[[np.ndarray], object], state: Callable[[], dict]):
        self.cfg, self.run, self.act, self.state = cfg, run, act, state
        self.recent_returns: deque[float] = deque(maxlen=10)
        self.start = time.perf_counter()
        self.episode_return, self.episode_length, self.episodes = 0.0, 0, 0
        self.best_eval: float | None = None
        self.last_eval: tuple[int, dict] | None = None  # (step, result) of the latest periodic evaluation
        self.progress = tqdm(total=cfg.total_steps, disable=not cfg.progress, unit="step", dynamic_ncols=True,
                             mininterval=0.5 if sys.stderr.isatty() else 30.0, desc=f"{cfg.algo}-{cfg.network.kind} {cfg.env_id}")

    def env_step(self, step: int, env, obs: np.ndarray, action, buffer, obs_norm) -> np.ndarray:
        """Act in the environment, store the transition, keep the episode books; return the next observation."""
        next_obs, reward, terminated, truncated, _ = env.step(action)
        obs_norm.update(torch.as_tensor(next_obs))
        buffer.add(obs, action, reward, next_obs, terminated)  # truncation still bootstraps
        self.episode_return += float(reward)
        self.episode_length += 1
        if terminated or truncated:
            self.episode_done(step)
            next_obs, _ = env.reset()
        return next_obs

    def episode_done(self, step: int) -> None:
        self.run.log_episode(step, self.episode_return, self.episode_length)
        self.recent_returns.append(self.episode_return)
        self.episodes += 1
        self.episode_return, self.episode_length = 0.0, 0
        self.progress.set_postfix(ret=f"{np.mean(self.recent_returns):.1f}", refresh=False)

    def steps_per_second(self, step: int) -> float:
        return step / max(time.perf_counter() - self.start, 1e-9)

    def after_step(self, step: int) -> bool:
        self.progress.update(1)
        if step % 1000 == 0:
            self.run.log_scalars(step, {"charts/SPS": self.steps_per_second(step)})
            rss = resident_memory_mib()
            if rss is not None:
                self.run.log_scalars(step, {"perf/rss_mib": rss, "perf/peak_rss_mib": peak_memory_mib()})
        if self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0:
            self.run.save_checkpoint(step, self.state())
        if self.cfg.eval.every and step % self.cfg.eval.every == 0:
            result = evaluate(self.act, self.cfg.env_id, self.cfg.eval.episodes, self.cfg.eval.seed)
            self.run.log_eval(step, result)
            self.last_eval = (step, result)
            self.best_eval = max(self.best_eval if self.best_eval is not None else -np.inf, result["mean_return"])
            self.progress.write(f"step {step}: eval mean return {result['mean_return']:.1f} "
                                f"+- {result['std_return']:.1f} over {result['episodes']} episodes")
            target = self.cfg.eval.stop_at_return
            if target is not None and result["mean_return"] >= target:
                self.progress.write(f"step {step}: reached eval.stop_at_return = {target}, stopping")
                return True
        return False

    def finish(self, step: int, policy_state: dict) -> dict:
        """Final evaluation over eval.final_episodes, final model and summary in the run folder."""
        self.progress.close()
        wall = time.perf_counter() - self.start
        episodes = self.cfg.eval.final_episodes
        if self.last_eval and self.last_eval[0] == step and self.last_eval[1]["episodes"] == episodes:
            result = self.last_eval[1]  # the same policy on the same seeds: evaluating again would repeat it
        else:
            result = evaluate(self.act, self.cfg.env_id, episodes, self.cfg.eval.seed)
            self.run.log_eval(step, result)
        best = max(self.best_eval if self.best_eval is not None else -np.inf, result["mean_return"])
        extra = {"global_step": step, "train_episodes": self.episodes, "wall_time_s": wall,
                 "steps_per_second": step / max(wall, 1e-9), "best_eval_mean_return": float(best),
                 "run_dir": str(self.run.dir)}
        self.run.save_final(self.cfg, policy_state, result, extra)
        self.run.close()
        return {**result, **extra}
