"""Current-based leaky integrate-and-fire (CUBA-LIF) dynamics as pure functions over explicit state.

One step, for input current x[t] (already W s_in[t] + b):

    I[t] = alpha * I[t-1] + x[t]          alpha: current retention in [0, 1]
    V[t] = beta  * V[t-1] + I[t]          beta:  voltage retention in [0, 1]
    S[t] = H(V[t] - theta)                strict threshold, theta > 0
    V[t] = V[t] * (1 - S[t])              hard reset (default)
    V[t] = V[t] - theta * S[t]            reset by subtraction (option)

State starts at zero on every forward pass. `cuba_lif_multistep` is the reference path: a plain
loop over `cuba_lif_step`, which every faster path must agree with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from spikerl.snn.surrogate import SpikeFunction


class CubaLIFState(NamedTuple):
    current: torch.Tensor  # I
    voltage: torch.Tensor  # V


@dataclass(frozen=True)
class CubaLIFParams:
    """Per-layer parameters; each is a scalar tensor or one value per neuron (broadcast over the batch)."""

    alpha: torch.Tensor
    beta: torch.Tensor
    theta: torch.Tensor


def zero_state(batch: int, size: int, like: torch.Tensor) -> CubaLIFState:
    zeros = like.new_zeros(batch, size)
    return CubaLIFState(zeros, zeros)


def cuba_lif_step(
    input_current: torch.Tensor,
    state: CubaLIFState,
    params: CubaLIFParams,
    spike_fn: SpikeFunction,
    reset: str = "hard",
    detach_reset: bool = True,
) -> tuple[torch.Tensor, CubaLIFState]:
    current = params.alpha * state.current + input_current
    voltage = params.beta * state.voltage + current
    spikes = spike_fn(voltage - params.theta)
    gate = spikes.detach() if detach_reset else spikes
    if reset == "hard":
        voltage = voltage * (1.0 - gate)
    elif reset == "subtract":
        voltage = voltage - params.theta * gate
    else:
        check_reset(reset)
    return spikes, CubaLIFState(current, voltage)


def check_reset(reset: str) -> None:
    if reset not in ("hard", "subtract"):
        raise ValueError(f"unknown reset {reset!r}; choose 'hard' or 'subtract'")


def records_gradient(input_currents: torch.Tensor, params: CubaLIFParams) -> bool:
    """Whether a fast multi-step path must build its autograd node: gradients are on and the input or a
    membrane parameter asks for one. Otherwise it runs its forward alone and keeps nothing."""
    return torch.is_grad_enabled() and (input_currents.requires_grad or params.alpha.requires_grad
                                        or params.beta.requires_grad or params.theta.requires_grad)


def cuba_lif_multistep(
    input_currents: torch.Tensor,
    params: CubaLIFParams,
    spike_fn: SpikeFunction,
    reset: str = "hard",
    detach_reset: bool = True,
) -> torch.Tensor:
    """Run T steps from the zero state. input_currents: [T, batch, n]; returns spikes [T, batch, n]."""
    steps, batch, size = input_currents.shape
    state = zero_state(batch, size, input_currents)
    spikes = []
    for t in range(steps):
        s, state = cuba_lif_step(input_currents[t], state, params, spike_fn, reset, detach_reset)
        spikes.append(s)
    return torch.stack(spikes)


def leaky_readout(input_currents: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """A non-spiking CUBA layer: the membrane V[T] after T steps from zero (alpha=0, beta=1 integrates)."""
    current = torch.zeros_like(input_currents[0])
    voltage = torch.zeros_like(input_currents[0])
    for t in range(input_currents.shape[0]):
        current = alpha * current + input_currents[t]
        voltage = beta * voltage + current
    return voltage
