"""The reference backend: the plain loop over `neuron.cuba_lif_step`, which every other backend must agree with.

With gradients, autograd records every step (simple and slow: T small nodes per layer). Without,
an in-place loop does exactly the same arithmetic per step and layer,

    I = alpha * I + x[t];  V = beta * V + I;  S = V > theta;  V = 0 where S (or V -= theta * S)

with the current and voltage in buffers kept per shape and zeroed at each call, no surrogate
object and no per-step allocation, so its spikes are identical to the loop's. Where alpha is 0 for
a whole layer (the presets' first layer) the current is the input itself, and the integrator
readout (alpha 0, beta 1) only adds: 0 * I + x and 1 * V + x are x and V + x exactly.
"""

from __future__ import annotations

import torch

from spikerl.snn.backends import Backend
from spikerl.snn.neuron import CubaLIFParams, check_reset, cuba_lif_step, zero_state
from spikerl.snn.surrogate import SpikeFunction


def as_steps(currents: torch.Tensor, steps: int | None) -> torch.Tensor:
    """[T, *batch, n] inputs: a constant current [*batch, n] (steps given) as a view repeated T times, not a copy."""
    return currents if steps is None else currents.expand(steps, *currents.shape)


def cuba_lif_multistep(currents: torch.Tensor, params: CubaLIFParams, spike_fn: SpikeFunction, reset: str = "hard",
                       detach_reset: bool = True, steps: int | None = None) -> torch.Tensor:
    """T steps of `cuba_lif_step` from rest: spikes [T, *batch, n]."""
    check_reset(reset)
    currents = as_steps(currents, steps)  # for a constant input autograd then sums the steps' gradients at once
    state = zero_state(currents[0])
    spikes = []
    for t in range(currents.shape[0]):
        s, state = cuba_lif_step(currents[t], state, params, spike_fn, reset, detach_reset)
        spikes.append(s)
    return torch.stack(spikes)


def leaky_readout(currents: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """A non-spiking CUBA layer: the membrane V[T] after T steps from rest (alpha 0, beta 1 integrates)."""
    current = torch.zeros_like(currents[0])
    voltage = torch.zeros_like(currents[0])
    for t in range(currents.shape[0]):
        current = alpha * current + currents[t]
        voltage = beta * voltage + current
    return voltage


class _StateBuffers:
    """Current and voltage buffers per (shape, dtype, device), reused across calls."""

    def __init__(self):
        self._buffers: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def zeros(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (tuple(like.shape), like.dtype, like.device)
        if key not in self._buffers:
            if len(self._buffers) > 32:  # many batch shapes (e.g. evaluation sweeps): do not hoard memory
                self._buffers.clear()
            self._buffers[key] = (torch.empty_like(like), torch.empty_like(like),
                                  torch.empty(like.shape, dtype=torch.bool, device=like.device))
        current, voltage, fired = self._buffers[key]
        current.zero_()
        voltage.zero_()
        return current, voltage, fired


class ReferenceBackend(Backend):
    name = "reference"

    def __init__(self):
        self._buffers = _StateBuffers()

    def multistep(self, currents, params, spike_fn, reset, detach_reset, steps):
        return cuba_lif_multistep(currents, params, spike_fn, reset, detach_reset, steps)

    @torch.no_grad()
    def multistep_no_grad(self, currents, params, reset, steps):
        check_reset(reset)
        currents = as_steps(currents, steps)
        shape = torch.broadcast_shapes(currents.shape[1:], params.alpha.shape, params.beta.shape, params.theta.shape)
        current, voltage, fired = self._buffers.zeros(currents[0].expand(shape))
        spikes = currents.new_empty(currents.shape[0], *shape)
        alpha, beta, theta = params.alpha, params.beta, params.theta
        no_current_memory = not bool(torch.any(alpha != 0))  # the presets' first layer: I[t] = x[t] exactly
        for t in range(spikes.shape[0]):
            if no_current_memory:
                voltage.mul_(beta).add_(currents[t])
            else:
                current.mul_(alpha).add_(currents[t])
                voltage.mul_(beta).add_(current)
            torch.gt(voltage, theta, out=fired)
            spikes[t].copy_(fired)
            if reset == "hard":
                voltage.masked_fill_(fired, 0.0)
            else:
                voltage.sub_(theta * spikes[t])
        return spikes

    def readout(self, currents, alpha, beta):
        if torch.is_grad_enabled() and currents.requires_grad:
            return leaky_readout(currents, alpha, beta)
        with torch.no_grad():
            shape = torch.broadcast_shapes(currents.shape[1:], alpha.shape, beta.shape)
            current, voltage, _ = self._buffers.zeros(currents[0].expand(shape))
            integrator = not bool(torch.any(alpha != 0)) and bool(torch.all(beta == 1))  # TD3's: V = sum of x[t]
            for t in range(currents.shape[0]):
                if integrator:
                    voltage.add_(currents[t])
                else:
                    current.mul_(alpha).add_(currents[t])
                    voltage.mul_(beta).add_(current)
            return voltage.clone()
