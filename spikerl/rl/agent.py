"""One agent of a population: its config, run folder, environments, random generators and episode books.

An agent draws only from its own generators, seeded with its own seed exactly as a run of that seed
alone: the run generator (exploration, replay sampling, minibatch order), the membrane draw, a torch
generator that continues the global torch stream after its networks were initialised (TD3's target
noise, SAC's and PPO's samples), and its environments and their action spaces.
So an agent trained in a population takes the same steps as the same config trained alone.

An agent has one environment (DQN, TD3, SAC) or `ppo.num_envs` of them, stepped together as a
synchronous vector environment would: environment i is first reset with seed + i (as Gymnasium's
vector environments and CleanRL seed theirs; so with N > 1, seed s's environment 1 starts as seed s + 1's
environment 0) and resets itself when its episode ends. Every finished episode, from
any of them, is one row of the agent's episodes.csv.

Mid-episode checkpoints: an environment's state is not saved directly (it may be a physics
simulator). Each environment records how its current episode began (the reset seed, or the
environment's generator state before the reset) and the actions taken since; resuming resets and
replays them, which rebuilds the state exactly, and checks the observation it ends on against the
saved one.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from spikerl.config import TrainConfig
from spikerl.errors import SpikerlError
from spikerl.rl.checkpoint import env_rng_state, restore_env_rng_state
from spikerl.rl.envs import make_env
from spikerl.rl.run import Run


@dataclass
class EnvSlot:
    """One of an agent's environments, with how its current episode began and what happened since."""

    env: gym.Env
    seed: int
    episode_start: dict = field(default_factory=dict)  # {"seed": s} or {"env_rng": generator state}
    episode_actions: list = field(default_factory=list)
    episode_return: float = 0.0
    episode_length: int = 0

    def state(self, obs: np.ndarray) -> dict:
        return {"episode_start": self.episode_start,
                "episode_actions": torch.from_numpy(np.asarray(self.episode_actions)) if self.episode_actions else None,
                "action_space_rng": self.env.action_space.np_random.bit_generator.state,
                "obs": torch.from_numpy(np.asarray(obs)).clone(),
                "episode_return": self.episode_return, "episode_length": self.episode_length}


class Agent:
    def __init__(self, index: int, cfg: TrainConfig, run: Run | None, num_envs: int = 1):
        self.index, self.cfg, self.run = index, cfg, run
        # Finished (or diverged) before this process began: nothing more is written for it.
        self.active = run is not None
        self.status = "training" if self.active else "finished"
        self.rng = np.random.default_rng(cfg.seed)
        self.membrane_generator = torch.Generator().manual_seed(cfg.seed)
        self.torch_generator = torch.Generator()  # set by the loop once the agent's networks are built
        self.slots = [EnvSlot(make_env(cfg.env_id, cfg.algo, env_kwargs=cfg.env_kwargs), cfg.seed + i, {"seed": cfg.seed + i}) for i in range(num_envs)]
        for slot in self.slots:
            slot.env.action_space.seed(slot.seed)
        self.recent_returns: deque[float] = deque(maxlen=10)
        self.episodes = 0
        self.best_eval: float | None = None
        self.last_eval: tuple[int, dict] | None = None  # (step, result) of the latest periodic evaluation
        self.diverged: str | None = None

    @property
    def env(self) -> gym.Env:
        """The agent's (first) environment."""
        return self.slots[0].env

    @property
    def name(self) -> str:
        return str(self.run.dir) if self.run is not None else f"agent {self.index}"

    def reset(self) -> np.ndarray:
        """The first reset of every environment, environment i seeded with seed + i: observations [N, d]."""
        return np.stack([slot.env.reset(seed=slot.seed)[0] for slot in self.slots])

    def step(self, action, i: int = 0) -> tuple[np.ndarray, float, bool, bool, np.ndarray, bool]:
        """Act in environment i; return (observation to store as next, reward, whether the return ends there,
        whether the episode ended, observation to act on next: the new episode's first when it ended,
        whether the environment terminated)."""
        slot = self.slots[i]
        next_obs, reward, terminated, truncated, _ = slot.env.step(action)
        slot.episode_actions.append(np.array(action, copy=True))
        ends_return = terminated or (truncated and not self.cfg.truncation_bootstraps)
        slot.episode_return += float(reward)
        slot.episode_length += 1
        if not (terminated or truncated):
            return next_obs, float(reward), ends_return, False, next_obs, False
        slot.episode_start = {"env_rng": env_rng_state(slot.env)["env"]}
        slot.episode_actions = []
        first_obs, _ = slot.env.reset()
        return next_obs, float(reward), ends_return, True, first_obs, bool(terminated)

    def end_episode(self, step: int, i: int = 0) -> None:
        slot = self.slots[i]
        self.run.log_episode(step, slot.episode_return, slot.episode_length)
        self.recent_returns.append(slot.episode_return)
        self.episodes += 1
        slot.episode_return, slot.episode_length = 0.0, 0

    def episodes_done(self) -> bool:
        """Whether the `total_episodes` budget (if any) is spent."""
        return self.cfg.total_episodes is not None and self.episodes >= self.cfg.total_episodes

    def close(self) -> None:
        for slot in self.slots:
            slot.env.close()

    # ------------------------------------------------------------------ checkpoints

    def state(self, obs: np.ndarray) -> dict:
        """`obs`: the observations the agent acts on next, [N, d]."""
        return {
            "status": self.status, "diverged": self.diverged, "rng": self.rng.bit_generator.state,
            "torch_generator": self.torch_generator.get_state(),
            "envs": [slot.state(o) for slot, o in zip(self.slots, obs)],
            "books": {"episodes": self.episodes, "recent_returns": list(self.recent_returns), "best_eval": self.best_eval,
                      "last_eval": self.last_eval},
            "logs": self.run.log_offsets() if self.run is not None and self.active else None,
        }

    def restore(self, state: dict) -> np.ndarray:
        """Restore the books and generators; rebuild the environments mid-episode; return the observations [N, d]."""
        self.rng.bit_generator.state = state["rng"]
        self.diverged = state["diverged"]
        if state["status"] != "training":  # stopped before the checkpoint: its run was closed then
            self.active, self.status = False, state["status"]
        self.torch_generator.set_state(state["torch_generator"])
        books = state["books"]
        self.episodes, self.best_eval = books["episodes"], books["best_eval"]
        self.recent_returns.extend(books["recent_returns"])
        self.last_eval = tuple(books["last_eval"]) if books["last_eval"] else None
        envs = state.get("envs") or [_one_env_layout(state)]  # format 4 kept one environment's at the top
        if len(envs) != len(self.slots):
            raise SpikerlError(f"cannot resume {self.name}: the checkpoint holds {len(envs)} environments per agent, "
                               f"the config {len(self.slots)}")
        return np.stack([self._restore_env(slot, env_state) for slot, env_state in zip(self.slots, envs)])

    def _restore_env(self, slot: EnvSlot, state: dict) -> np.ndarray:
        slot.episode_return, slot.episode_length = state["episode_return"], state["episode_length"]
        slot.episode_start = state["episode_start"]
        actions = state["episode_actions"]
        slot.episode_actions = [a.numpy() for a in actions] if actions is not None else []
        if "seed" in slot.episode_start:
            obs, _ = slot.env.reset(seed=slot.episode_start["seed"])
        else:
            restore_env_rng_state(slot.env, {"env": slot.episode_start["env_rng"], "action_space": state["action_space_rng"]})
            obs, _ = slot.env.reset()
        for action in slot.episode_actions:
            obs = slot.env.step(action)[0]
        slot.env.action_space.np_random.bit_generator.state = state["action_space_rng"]
        saved = state["obs"].numpy()
        if not np.array_equal(np.asarray(obs, dtype=saved.dtype), saved):
            raise SpikerlError(f"cannot resume {self.name}: replaying its episode's {len(slot.episode_actions)} "
                               f"actions in {self.cfg.env_id} did not reach the observation the checkpoint saved "
                               "(the environment is not deterministic given its seed and actions)")
        return obs

    def write_diverged(self, step: int, reason: str, last_checkpoint: str | None) -> None:
        (self.run.dir / "diverged.json").write_text(json.dumps(
            {"global_step": step, "reason": reason, "last_good_checkpoint": last_checkpoint}))


def _one_env_layout(state: dict) -> dict:
    """A format-4 agent state's single environment, in the layout of `EnvSlot.state`."""
    return {"episode_start": state["episode_start"], "episode_actions": state["episode_actions"],
            "action_space_rng": state["action_space_rng"], "obs": state["obs"],
            "episode_return": state["books"]["episode_return"], "episode_length": state["books"]["episode_length"]}
