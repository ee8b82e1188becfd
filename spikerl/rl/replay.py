"""A preallocated ring replay buffer (memory is fixed at creation; nothing grows per step).

The arrays are written once at creation: np.zeros alone only reserves address space, and the
operating system would then commit the pages as the buffer fills, so memory would creep up for
the first `capacity` steps and a machine too small for the buffer would fail hours into a run.
"""

from __future__ import annotations

import numpy as np
import torch


def _committed(shape: tuple[int, ...], dtype) -> np.ndarray:
    array = np.empty(shape, dtype=dtype)
    array.fill(0)  # touch every page now
    return array


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, action_shape: tuple[int, ...], action_dtype=np.float32):
        self.capacity = capacity
        self.obs = _committed((capacity, obs_dim), np.float32)
        self.next_obs = _committed((capacity, obs_dim), np.float32)
        self.actions = _committed((capacity, *action_shape), action_dtype)
        self.rewards = _committed((capacity,), np.float32)
        self.terminated = _committed((capacity,), np.float32)  # true termination only; truncation bootstraps
        self.position, self.size = 0, 0

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        i = self.position
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, float(terminated)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays().values())

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"obs": self.obs, "next_obs": self.next_obs, "actions": self.actions, "rewards": self.rewards,
                "terminated": self.terminated}

    def state_dict(self) -> dict:
        """The filled part only, as tensors (a checkpoint of a young run stays small)."""
        return {"position": self.position, "size": self.size, "capacity": self.capacity,
                **{name: torch.from_numpy(array[:self.size].copy()) for name, array in self._arrays().items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay buffer capacity {state['capacity']} in the checkpoint, {self.capacity} configured")
        for name, array in self._arrays().items():
            array[:state["size"]] = state[name].numpy()
        self.position, self.size = state["position"], state["size"]

    def sample(self, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu"):
        idx = rng.integers(0, self.size, size=batch_size)

        def as_tensor(array):
            return torch.as_tensor(array[idx], device=device)

        return (as_tensor(self.obs), as_tensor(self.actions), as_tensor(self.rewards),
                as_tensor(self.next_obs), as_tensor(self.terminated))
