"""Encoders: an observation batch [B, obs_dim] -> input over T steps, [T, B, features].

Constant encoders (direct, two-neuron) return the same current at every step; they set
`constant = True` so the first layer can compute W x once and reuse it for all T steps.

    direct:      x[t] = o
    two_neuron:  x[t] = (max(o, 0), max(-o, 0))                           2 * obs_dim features
    population:  a_jk = exp(-(o_j - mu_jk)^2 / (2 sigma_jk^2)), learnable mu, sigma (PopSAN: 10 means over
                 [-3, 3], sigma sqrt(0.15) at the start),
                 deterministic spikes from an integrate-and-fire neuron driven by a (threshold 0.999),
                 or Poisson spikes S ~ Bernoulli(a); straight-through gradient to mu, sigma
    poisson:     the two-neuron split, clamped to [0, 1], as a per-step spike probability
                 (use with normalize_obs so rates are meaningful)
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ObservationNormalizer(nn.Module):
    """Running statistics of the observations, read by every network of an agent. The training loop
    updates them with each observation collected; networks only read them, so actor, critics and targets
    agree. Stacked for a population (`stacked`), each statistic gains a leading agents dimension and each
    agent's statistics see only its own observations."""

    dim: int  # observation components

    def stacked(self, agents: int) -> ObservationNormalizer:
        """This normalizer for `agents` agents: every statistic of shape S as [agents, 1, *S] (a scalar as
        [agents, 1, 1]), as `spikerl.snn.stacked` stacks every buffer."""
        for name, buffer in list(self.named_buffers(recurse=False)):
            shape = (1, 1, *buffer.shape) if buffer.dim() else (1, 1, 1)
            setattr(self, name, buffer.reshape(shape).repeat(agents, *([1] * (len(shape) - 1))))
        return self

    @property
    def device(self) -> torch.device:
        return next(self.buffers()).device


class RunningMaxAbs(ObservationNormalizer):
    """Observation normalization o / max|o| per component, the max taken over every observation seen.

    dsrl divides TD3 observations by this running maximum so inputs lie in [-1, 1].
    """

    def __init__(self, dim: int, enabled: bool = True):
        super().__init__()
        self.enabled, self.dim = enabled, dim
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


class RunningMeanStd(ObservationNormalizer):
    """Observation normalization clip((o - mean) / sqrt(var + 1e-8), -clip, clip) per component, with the
    running mean and variance of every observation seen (Chan et al.'s parallel update, starting from
    mean 0, variance 1 and a count of 1e-4, in float64): Gymnasium's NormalizeObservation, which the
    standard PPO implementations (CleanRL, Stable-Baselines3) use for continuous control.
    """

    def __init__(self, dim: int, enabled: bool = True, clip: float = 10.0):
        super().__init__()
        self.enabled, self.dim, self.clip = enabled, dim, clip
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        if not self.enabled:
            return
        obs = obs.to(torch.float64)
        if self.mean.dim() == 1:
            obs = obs.reshape(-1, obs.shape[-1])
            batch_mean, batch_var, batch_count = obs.mean(dim=0), obs.var(dim=0, unbiased=False), obs.shape[0]
        else:  # stacked agents: mean [K, 1, d], count [K, 1, 1], obs [K, B, d], each agent its own rows
            batch_mean, batch_var = obs.mean(dim=-2, keepdim=True), obs.var(dim=-2, unbiased=False, keepdim=True)
            batch_count = obs.shape[-2]
        count = self.count
        delta, total = batch_mean - self.mean, count + batch_count
        squares = self.var * count + batch_var * batch_count + delta.square() * count * batch_count / total
        self.mean.add_(delta * batch_count / total)
        self.var.copy_(squares / total)
        self.count.add_(batch_count)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        normalized = (obs - self.mean) / torch.sqrt(self.var + 1e-8)
        return normalized.clamp(-self.clip, self.clip).to(obs.dtype)


def observation_normalizer(net_cfg, dim: int) -> ObservationNormalizer:
    """The normalizer a network config asks for (`normalize_obs`, `obs_normalizer`), for `dim` observations."""
    if net_cfg.obs_normalizer == "mean_std":
        return RunningMeanStd(dim, enabled=net_cfg.normalize_obs, clip=net_cfg.obs_clip)
    return RunningMaxAbs(dim, enabled=net_cfg.normalize_obs)


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

    def __init__(self, obs_dim: int, population_size: int, mean_range=(-3.0, 3.0), std: float = math.sqrt(0.15), spikes: str = "deterministic"):
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
                  population_std: float = math.sqrt(0.15), population_spikes: str = "deterministic") -> nn.Module:
    if name == "direct":
        return DirectEncoder(obs_dim)
    if name == "two_neuron":
        return TwoNeuronEncoder(obs_dim)
    if name == "population":
        return PopulationEncoder(obs_dim, population_size, tuple(population_range), population_std, population_spikes)
    if name == "poisson":
        return PoissonEncoder(obs_dim)
    raise ValueError(f"unknown encoder {name!r}")
