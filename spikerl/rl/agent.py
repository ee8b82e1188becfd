"""One agent of a population: its config, run folder, environment, random generators and episode books.

An agent draws only from its own generators, seeded with its own seed exactly as a run of that seed
alone: the run generator (exploration, replay sampling), the membrane draw, a torch generator that
continues the global torch stream after its networks were initialised (TD3's target noise, SAC's
samples), and its environment and action space. So an agent trained in a population takes the same
steps as the same config trained alone.

Mid-episode checkpoints: an environment's state is not saved directly (it may be a physics
simulator). The agent records how its current episode began (the reset seed, or the environment's
generator state before the reset) and the actions taken since; resuming resets and replays them,
which rebuilds the state exactly, and checks the observation it ends on against the saved one.
"""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import torch

from spikerl.config import TrainConfig
from spikerl.errors import SpikerlError
from spikerl.rl.checkpoint import env_rng_state, restore_env_rng_state
from spikerl.rl.envs import make_env
from spikerl.rl.run import Run


class Agent:
    def __init__(self, index: int, cfg: TrainConfig, run: Run | None):
        self.index, self.cfg, self.run = index, cfg, run
        # Finished (or diverged) before this process began: nothing more is written for it.
        self.active = run is not None
        self.status = "training" if self.active else "finished"
        self.rng = np.random.default_rng(cfg.seed)
        self.membrane_generator = torch.Generator().manual_seed(cfg.seed)
        self.torch_generator = torch.Generator()  # set by the loop once the agent's networks are built
        self.env = make_env(cfg.env_id, cfg.algo)
        self.env.action_space.seed(cfg.seed)
        self.recent_returns: deque[float] = deque(maxlen=10)
        self.episode_return, self.episode_length, self.episodes = 0.0, 0, 0
        self.best_eval: float | None = None
        self.last_eval: tuple[int, dict] | None = None  # (step, result) of the latest periodic evaluation
        self.episode_start: dict = {"seed": cfg.seed}  # how the current episode began (see the module docstring)
        self.episode_actions: list[np.ndarray] = []
        self.diverged: str | None = None

    @property
    def name(self) -> str:
        return str(self.run.dir) if self.run is not None else f"agent {self.index}"

    def reset(self) -> np.ndarray:
        """The first reset, seeded with the agent's seed."""
        obs, _ = self.env.reset(seed=self.cfg.seed)
        return obs

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, np.ndarray]:
        """Act; return (observation to store as next, reward, whether the return ends there, whether the
        episode ended, observation to act on next: the new episode's first when it ended)."""
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.episode_actions.append(np.array(action, copy=True))
        ends_return = terminated or (truncated and not self.cfg.truncation_bootstraps)
        self.episode_return += float(reward)
        self.episode_length += 1
        if not (terminated or truncated):
            return next_obs, float(reward), ends_return, False, next_obs
        self.episode_start = {"env_rng": env_rng_state(self.env)["env"]}
        self.episode_actions = []
        first_obs, _ = self.env.reset()
        return next_obs, float(reward), ends_return, True, first_obs

    def end_episode(self, step: int) -> None:
        self.run.log_episode(step, self.episode_return, self.episode_length)
        self.recent_returns.append(self.episode_return)
        self.episodes += 1
        self.episode_return, self.episode_length = 0.0, 0

    def episodes_done(self) -> bool:
        """Whether the `total_episodes` budget (if any) is spent."""
        return self.cfg.total_episodes is not None and self.episodes >= self.cfg.total_episodes

    # ------------------------------------------------------------------ checkpoints

    def state(self, obs: np.ndarray) -> dict:
        return {
            "status": self.status, "diverged": self.diverged, "rng": self.rng.bit_generator.state, "torch_generator": self.torch_generator.get_state(),
            "action_space_rng": self.env.action_space.np_random.bit_generator.state,
            "episode_start": self.episode_start,
            "episode_actions": torch.from_numpy(np.asarray(self.episode_actions)) if self.episode_actions else None,
            "obs": torch.from_numpy(np.asarray(obs)).clone(),
            "books": {"episodes": self.episodes, "recent_returns": list(self.recent_returns), "best_eval": self.best_eval,
                      "last_eval": self.last_eval, "episode_return": self.episode_return,
                      "episode_length": self.episode_length},
            "logs": self.run.log_offsets() if self.run is not None and self.active else None,
        }

    def restore(self, state: dict) -> np.ndarray:
        """Restore the books and generators; rebuild the environment mid-episode; return the observation."""
        self.rng.bit_generator.state = state["rng"]
        self.diverged = state["diverged"]
        if state["status"] != "training":  # stopped before the checkpoint: its run was closed then
            self.active, self.status = False, state["status"]
        self.torch_generator.set_state(state["torch_generator"])
        books = state["books"]
        self.episodes, self.best_eval = books["episodes"], books["best_eval"]
        self.recent_returns.extend(books["recent_returns"])
        self.last_eval = tuple(books["last_eval"]) if books["last_eval"] else None
        self.episode_return, self.episode_length = books["episode_return"], books["episode_length"]
        self.episode_start = state["episode_start"]
        actions = state["episode_actions"]
        self.episode_actions = [a.numpy() for a in actions] if actions is not None else []
        if "seed" in self.episode_start:
            obs, _ = self.env.reset(seed=self.episode_start["seed"])
        else:
            restore_env_rng_state(self.env, {"env": self.episode_start["env_rng"],
                                             "action_space": state["action_space_rng"]})
            obs, _ = self.env.reset()
        for action in self.episode_actions:
            obs = self.env.step(action)[0]
        self.env.action_space.np_random.bit_generator.state = state["action_space_rng"]
        saved = state["obs"].numpy()
        if not np.array_equal(np.asarray(obs, dtype=saved.dtype), saved):
            raise SpikerlError(f"cannot resume {self.name}: replaying its episode's {len(self.episode_actions)} "
                               f"actions in {self.cfg.env_id} did not reach the observation the checkpoint saved "
                               "(the environment is not deterministic given its seed and actions)")
        return obs

    def write_diverged(self, step: int, reason: str, last_checkpoint: str | None) -> None:
        (self.run.dir / "diverged.json").write_text(json.dumps(
            {"global_step": step, "reason": reason, "last_good_checkpoint": last_checkpoint}))
