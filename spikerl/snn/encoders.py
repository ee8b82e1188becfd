"""Encoders: an observation batch [B, obs_dim] -> input over T steps, [T, B, features].

Constant encoders (direct, two-neuron) return the same current at every step; they set
`constant = True` so the first layer can compute W x once and reuse it for all T steps.

    direct:      x[t] = o
    two_neuron:  x[t] = (max(o, 0), max(-o, 0))                           2 * obs_dim features
    population:  a_jk = exp(-(o_j - mu_jk)^2 / (2 sigma_jk^2)), learnable mu, sigma (PopSAN),
                 deterministic spikes from an integrate-and-fire neuron driven by a (threshold 0.999),
                 or Poisson spikes S ~ Bernoulli(a); straight-through gradient to mu, sigma
    poisson:     the two-neuron split, clamped to [0, 1], as a per-step spike probability
                 (use with normalize_obs so rates are meaningful)
"""

from __future__ import annotations

import torch
from torch import nn


class RunningMaxAbs(nn.Module):
    """Observation normalization o / max|o| per component, the max taken over every observation seen.

    dsrl divides TD3 observations by this running maximum so inputs lie in [-1, 1]. The agent updates
    it on each collected observation; networks only read it, so actor, critics and targets agree.
    """

    def __init__(self, dim: int, enabled: bool = True):
        super().__init__()
        self.enabled = enabled
        self.register_buffer("max_abs", torch.zeros(dim))

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        if not self.enabled:
            return
        if self.max_abs.dim() == 1:
            batch_max = obs.abs().reshape(-1, obs.shape[-1]).amax(dim=0)
        else:  # stacked agents (spikerl.snn.stacked): max_abs [K, 1, d], obs [K, B, d], each agent its own
            batch_max = obs.abs().amax(dim=-2, keepdim=True)
        torch.maximum(self.max_abs, batch_max, out=self.max_abs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        return obs / self.max_abs.clamp(min=1e-8)


class DirectEncoder(nn.Module):
    constant = True

    def __init__(self, obs_dim: int):
        super().__init__()
        self.out_features = obs_dim

    def forward(self, obs: torch.Tensor, timesteps: int) -> torch.Tensor:
        return obs.unsqueeze(0).expand(timesteps, *obs.shape)


def two_neuron_split(obs: torch.Tensor) -> torch.Tensor:
    return torch.cat([obs.clamp(min=0), (-obs).clamp(min=0)], dim=-1)


class TwoNeuronEncoder(nn.Module):
    constant = True

    def __init__(self, obs_dim: int):
        super().__init__()
        self.out_features = 2 * obs_dim

    def forward(self, obs: torch.Tensor, timesteps: int) -> torch.Tensor:
        x = two_neuron_split(obs)
        return x.unsqueeze(0).expand(timesteps, *x.shape)


class _StraightThroughSpike(torch.autograd.Function):
    """Forward: the given binary spikes; backward: the gradient passes to the driving value unchanged."""

    @staticmethod
    def forward(ctx, drive: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return spikes

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None


class PopulationEncoder(nn.Module):
    constant = False
    REGULAR_THRESHOLD = 0.999  # PopSAN's deterministic encoder threshold

    def __init__(self, obs_dim: int, population_size: int, mean_range=(-3.0, 3.0), std: float = 0.15, spikes: str = "deterministic"):
        super().__init__()
        if spikes not in ("deterministic", "poisson"):
            raise ValueError(f"unknown population spikes {spikes!r}")
        self.obs_dim, self.population_size, self.spikes = obs_dim, population_size, spikes
        self.out_features = obs_dim * population_size
        low, high = mean_range
        means = torch.linspace(low, high, population_size) if population_size > 1 else torch.tensor([(low + high) / 2])
        self.mean = nn.Parameter(means.repeat(obs_dim, 1))  # [obs_dim, pop]
        self.std = nn.Parameter(torch.full((obs_dim, population_size), float(std)))

    def activation(self, obs: torch.Tensor) -> torch.Tensor:
        """Receptive-field activations in (0, 1]: [B, obs_dim * pop]."""
        a = torch.exp(-((obs.unsqueeze(-1) - self.mean) ** 2) / (2.0 * self.std**2))
        return a.reshape(*obs.shape[:-1], self.out_features)

    def forward(self, obs: torch.Tensor, timesteps: int) -> torch.Tensor:
        act = self.activation(obs)
        out = []
        if self.spikes == "poisson":
            for _ in range(timesteps):
                out.append(_StraightThroughSpike.apply(act, torch.bernoulli(act.detach())))
            return torch.stack(out)
        volt = torch.zeros_like(act)
        for _ in range(timesteps):
            volt = volt + act
            spikes = _StraightThroughSpike.apply(volt, (volt > self.REGULAR_THRESHOLD).to(act.dtype))
            volt = volt - spikes * self.REGULAR_THRESHOLD
            out.append(spikes)
        return torch.stack(out)


class PoissonEncoder(nn.Module):
    constant = False

    def __init__(self, obs_dim: int):
        super().__init__()
        self.out_features = 2 * obs_dim

    def forward(self, obs: torch.Tensor, timesteps: int) -> torch.Tensor:
        rates = two_neuron_split(obs).clamp(max=1.0)
        return torch.bernoulli(rates.unsqueeze(0).expand(timesteps, *rates.shape))


def build_encoder(name: str, obs_dim: int, population_size: int = 10, population_range=(-3.0, 3.0),
                  population_std: float = 0.15, population_spikes: str = "deterministic") -> nn.Module:
    if name == "direct":
        return DirectEncoder(obs_dim)
    if name == "two_neuron":
        return TwoNeuronEncoder(obs_dim)
    if name == "population":
        return PopulationEncoder(obs_dim, population_size, tuple(population_range), population_std, population_spikes)
    if name == "poisson":
        return PoissonEncoder(obs_dim)
    raise ValueError(f"unknown encoder {name!r}")
