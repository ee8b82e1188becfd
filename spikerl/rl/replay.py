"""A preallocated ring replay buffer (memory is fixed at creation; nothing grows per step)."""

from __future__ import annotations

import numpy as np
import torch


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, action_shape: tuple[int, ...], action_dtype=np.float32):
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)  # true termination only; truncation bootstraps
        self.position, self.size = 0, 0

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        i = self.position
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, float(terminated)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu"):
        idx = rng.integers(0, self.size, size=batch_size)

        def as_tensor(array):
            return torch.as_tensor(array[idx], device=device)

        return (as_tensor(self.obs), as_tensor(self.actions), as_tensor(self.rewards),
                as_tensor(self.next_obs), as_tensor(self.terminated))
