"""The no-grad path: the CUBA-LIF recurrence of `neuron.cuba_lif_step`, in place, for acting and targets.

Every forward pass that needs no gradient (choosing an action, target networks, evaluation) runs
here when `network.inference = fast` (the default): no surrogate function object, no autograd
bookkeeping, no per-step allocations; the current and voltage live in buffers kept per batch
shape and zeroed at each call. Per step and layer it does exactly the reference's arithmetic,

    I = alpha * I + x[t];  V = beta * V + I;  S = V > theta;  V = 0 where S (or V -= theta * S)

so spikes and outputs are identical to the reference path (tests/test_inference.py). Where alpha is
0 for a whole layer (the presets' first layer) the current is the input itself, and the integrator
readout (alpha 0, beta 1) only adds: 0 * I + x and 1 * V + x are x and V + x exactly.
"""

from __future__ import annotations

import torch

from spikerl.snn.neuron import CubaLIFParams


class StateBuffers:
    """Current and voltage buffers per (batch, size, dtype, device), reused across calls."""

    def __init__(self):
        self._buffers: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def zeros(self, batch: int, size: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (batch, size, like.dtype, like.device)
        if key not in self._buffers:
            if len(self._buffers) > 16:  # many batch shapes (e.g. evaluation sweeps): do not hoard memory
                self._buffers.clear()
            self._buffers[key] = (like.new_empty(batch, size), like.new_empty(batch, size),
                                  torch.empty(batch, size, dtype=torch.bool, device=like.device))
        current, voltage, fired = self._buffers[key]
        current.zero_()
        voltage.zero_()
        return current, voltage, fired


@torch.no_grad()
def cuba_lif_multistep_inference(input_currents: torch.Tensor, params: CubaLIFParams, reset: str,
                                 buffers: StateBuffers) -> torch.Tensor:
    """T steps from zero for input_currents [T, batch, n]; returns new spikes [T, batch, n]."""
    steps, batch, size = input_currents.shape
    current, voltage, fired = buffers.zeros(batch, size, input_currents)
    spikes = torch.empty_like(input_currents)
    alpha, beta, theta = params.alpha, params.beta, params.theta
    no_current_memory = not bool(torch.any(alpha != 0))  # the presets' first layer: I[t] = x[t] exactly
    for t in range(steps):
        if no_current_memory:
            voltage.mul_(beta).add_(input_currents[t])
        else:
            current.mul_(alpha).add_(input_currents[t])
            voltage.mul_(beta).add_(current)
        torch.gt(voltage, theta, out=fired)
        spikes[t].copy_(fired)
        if reset == "hard":
            voltage.masked_fill_(fired, 0.0)
        else:
            voltage.sub_(theta * spikes[t])
    return spikes


@torch.no_grad()
def leaky_readout_inference(input_currents: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                            buffers: StateBuffers) -> torch.Tensor:
    """The non-spiking readout's V[T], as `neuron.leaky_readout`."""
    current, voltage, _ = buffers.zeros(input_currents.shape[1], input_currents.shape[2], input_currents)
    integrator = not bool(torch.any(alpha != 0)) and bool(torch.all(beta == 1))  # TD3's readout: V = sum of x[t]
    for t in range(input_currents.shape[0]):
        if integrator:
            voltage.add_(input_currents[t])
        else:
            current.mul_(alpha).add_(input_currents[t])
            voltage.mul_(beta).add_(current)
    return voltage.clone()
