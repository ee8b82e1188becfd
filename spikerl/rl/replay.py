"""A preallocated ring replay buffer per agent (memory is fixed at creation; nothing grows per step).

The agents of a population add one transition each per step, so their buffers fill in step: one set
of arrays [agents, capacity, ...] with one write position. Each agent samples its own indices from its
own generator, as its run alone would; the batch comes back stacked, [agents, batch, ...].

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
    def __init__(self, capacity: int, obs_dim: int, action_shape: tuple[int, ...], action_dtype=np.float32,
                 agents: int = 1):
        self.capacity, self.agents = capacity, agents
        self.obs = _committed((agents, capacity, obs_dim), np.float32)
        self.next_obs = _committed((agents, capacity, obs_dim), np.float32)
        self.actions = _committed((agents, capacity, *action_shape), action_dtype)
        self.rewards = _committed((agents, capacity), np.float32)
        self.terminated = _committed((agents, capacity), np.float32)  # the return ends here (see the config)
        self.position, self.size = 0, 0
        self._rows = np.arange(agents)[:, None]

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """One transition per agent: obs [agents, d], actions [agents, ...], rewards [agents], ..."""
        i = self.position
        self.obs[:, i], self.actions[:, i], self.rewards[:, i] = obs, actions, rewards
        self.next_obs[:, i], self.terminated[:, i] = next_obs, terminated
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
        return {"position": self.position, "size": self.size, "capacity": self.capacity, "agents": self.agents,
                **{name: torch.from_numpy(array[:, :self.size].copy()) for name, array in self._arrays().items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay buffer capacity {state['capacity']} in the checkpoint, {self.capacity} configured")
        if state.get("agents") != self.agents:
            raise ValueError(f"replay buffers of {state.get('agents')} agents in the checkpoint, {self.agents} configured")
        for name, array in self._arrays().items():
            array[:, :state["size"]] = state[name].numpy()
        self.position, self.size = state["position"], state["size"]

    def sample(self, batch_size: int, rngs: list[np.random.Generator], device: torch.device | str = "cpu"):
        """A batch per agent, agent k's indices drawn from rngs[k]: (obs, actions, rewards, next_obs,
        terminated), each [agents, batch, ...]."""
        idx = np.stack([rng.integers(0, self.size, size=batch_size) for rng in rngs])

        def as_tensor(array):
            return torch.as_tensor(array[self._rows, idx], device=device)

        return (as_tensor(self.obs), as_tensor(self.actions), as_tensor(self.rewards),
                as_tensor(self.next_obs), as_tensor(self.terminated))
