"""Current-based leaky integrate-and-fire (CUBA-LIF) dynamics as pure functions over explicit state.

One step, for input current x[t] (already W s_in[t] + b):

    I[t] = alpha * I[t-1] + x[t]          alpha: current retention in [0, 1]
    V[t] = beta  * V[t-1] + I[t]          beta:  voltage retention in [0, 1]
    S[t] = H(V[t] - theta)                strict threshold, theta > 0
    V[t] = V[t] * (1 - S[t])              hard reset (default)
    V[t] = V[t] - theta * S[t]            reset by subtraction (option)

State starts at zero on every forward pass. Parameters broadcast against the state: a scalar, one
value per neuron, or any shape that broadcasts to [*batch, n] (one row per agent, say). This module
is the equations and nothing else; `spikerl.snn.backends` runs them over T steps, and its reference
backend is the plain loop over `cuba_lif_step` that every faster backend is tested against.
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
    """A layer's parameters; each a tensor that broadcasts against the state [*batch, n]."""

    alpha: torch.Tensor
    beta: torch.Tensor
    theta: torch.Tensor


def zero_state(like: torch.Tensor) -> CubaLIFState:
    """The resting state for one step's input `like` ([*batch, n]): current and voltage zero."""
    zeros = torch.zeros_like(like)
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
