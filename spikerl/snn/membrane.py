"""Membrane parameters of one layer: one shared value, a fixed per-neuron draw, or learnable per neuron.

Randomized (the paper's finding that heterogeneity stabilizes training), drawn once at construction
from the given generator, then fixed:

    normal:   p_i ~ N(p, (spread * p)^2)
    uniform:  p_i ~ U(p * (1 - spread), p * (1 + spread))
    then alpha_i, beta_i clipped to [0, 1] and theta_i clipped to >= 0 (as dsrl).

Learnable: per-neuron values trained by gradient through a range-keeping map,
alpha = sigmoid(a_raw), beta = sigmoid(b_raw), theta = softplus(t_raw), initialised to the
uniform or randomized values (clamped into the open range so the map can be inverted).
Fixed values live in buffers, so copies (target networks) and checkpoints hold the same draw.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from spikerl.snn.neuron import CubaLIFParams

_EPS = 1e-4  # keeps learnable decays inside (0, 1) and thresholds > 0 so the maps stay invertible


def draw_per_neuron(
    value: float, shape: tuple[int, ...], randomize: str, spread: float, generator: torch.Generator | None,
    upper: float | None
) -> torch.Tensor:
    """Per-neuron values around `value`, clipped to [0, upper] (upper None: no upper bound)."""
    if randomize == "none":
        values = torch.full(shape, float(value))
    elif randomize == "normal":
        values = value + spread * value * torch.randn(shape, generator=generator)
    elif randomize == "uniform":
        values = value * (1.0 - spread + 2.0 * spread * torch.rand(shape, generator=generator))
    else:
        raise ValueError(f"unknown randomization {randomize!r}")
    return values.clamp(min=0.0, max=upper)


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(_EPS, 1.0 - _EPS)
    return torch.log(p) - torch.log1p(-p)


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    y = y.clamp(min=_EPS)
    return y + torch.log(-torch.expm1(-y))


class MembraneParameters(nn.Module):
    """alpha, beta, theta of one layer: `shape` is the number of neurons n, or a shape ending in n that
    broadcasts against the layer's input (per-agent rows [agents, 1, n])."""

    def __init__(
        self,
        shape: int | tuple[int, ...],
        alpha: float,
        beta: float,
        theta: float,
        randomize: str = "none",
        spread: float = 0.1,
        learnable: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.size, self.learnable = self.shape[-1], learnable
        alpha_v = draw_per_neuron(alpha, self.shape, randomize, spread, generator, upper=1.0)
        beta_v = draw_per_neuron(beta, self.shape, randomize, spread, generator, upper=1.0)
        theta_v = draw_per_neuron(theta, self.shape, randomize, spread, generator, upper=None)
        if learnable:
            self.alpha_raw = nn.Parameter(_logit(alpha_v))
            self.beta_raw = nn.Parameter(_logit(beta_v))
            self.theta_raw = nn.Parameter(_inverse_softplus(theta_v))
        else:
            self.register_buffer("alpha_fixed", alpha_v)
            self.register_buffer("beta_fixed", beta_v)
            self.register_buffer("theta_fixed", theta_v)

    @property
    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha_raw) if self.learnable else self.alpha_fixed

    @property
    def beta(self) -> torch.Tensor:
        return torch.sigmoid(self.beta_raw) if self.learnable else self.beta_fixed

    @property
    def theta(self) -> torch.Tensor:
        return F.softplus(self.theta_raw) if self.learnable else self.theta_fixed

    def params(self) -> CubaLIFParams:
        return CubaLIFParams(self.alpha, self.beta, self.theta)

    def extra_repr(self) -> str:
        kind = "learnable" if self.learnable else "fixed"
        return f"shape={self.shape}, {kind}"
