"""Spiking layers: a CUBA-LIF layer over T steps and the non-spiking readout, each owning its parameters.

    CubaLIF(n, alpha, beta, theta, ...)(currents)      currents [T, *batch, n] -> spikes [T, *batch, n]
    CubaLIF(...)(current, steps=T)                     one current [*batch, n] at every step (a constant input)
    LeakyReadout(n, alpha, beta)(currents)              currents [T, *batch, n] -> membrane V[T], [*batch, n]

Stateless per forward: every call starts from rest. The membrane parameters (uniform, randomized
per neuron, or learnable) belong to the layer; their shape is [n] by default, or any shape that
broadcasts against [*batch, n] (per-agent rows [agents, 1, n] for stacked agents). How the T steps
are computed is the layer's backend (`spikerl.snn.backends`), chosen by name and switchable at run
time with `set_backend`: a pass with gradients runs its `multistep`, one without its in-place
`multistep_no_grad`.
"""

from __future__ import annotations

import torch
from torch import nn

from spikerl.errors import SpikerlError
from spikerl.snn.backends import Backend, get_backend, resolve_backend
from spikerl.snn.membrane import MembraneParameters
from spikerl.snn.neuron import check_reset
from spikerl.snn.surrogate import SpikeFunction


def _backend(backend: str | Backend, device: torch.device | str = "cpu") -> Backend:
    return backend if isinstance(backend, Backend) else get_backend(resolve_backend(backend, device))


class CubaLIF(nn.Module):
    """One layer of `size` current-based LIF neurons simulated for T steps from rest (see `neuron.py`)."""

    def __init__(self, size: int, alpha: float, beta: float, theta: float, *, randomize: str = "none",
                 spread: float = 0.1, learnable: bool = False, generator: torch.Generator | None = None,
                 spike_fn: SpikeFunction | None = None, reset: str = "hard", detach_reset: bool = True,
                 backend: str = "reference", shape: tuple[int, ...] | None = None):
        super().__init__()
        check_reset(reset)
        self.size, self.reset, self.detach_reset = size, reset, detach_reset
        self.spike_fn = spike_fn or SpikeFunction()
        self.membrane = MembraneParameters(shape or (size,), alpha, beta, theta, randomize, spread, learnable, generator)
        self.set_backend(backend)

    def set_backend(self, backend: str | Backend, device: torch.device | str = "cpu") -> None:
        """Compute this layer's steps with `backend` (a name, auto resolved for `device`, or a backend object)."""
        backend = _backend(backend, device)
        if self.membrane.learnable and not backend.learnable:
            raise SpikerlError(f"network.backend {backend.name!r} cannot learn membrane parameters")
        self.backend = backend

    def forward(self, currents: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        params = self.membrane.params()
        self.backend.check_tensor(currents)
        if torch.is_grad_enabled() and (currents.requires_grad or self.membrane.learnable):
            return self.backend.multistep(currents, params, self.spike_fn, self.reset, self.detach_reset, steps)
        return self.backend.multistep_no_grad(currents, params, self.reset, steps)

    def extra_repr(self) -> str:
        return f"size={self.size}, reset={self.reset}, backend={self.backend.name}"


class LeakyReadout(nn.Module):
    """A non-spiking CUBA layer read out at its last step: I[t] = alpha I[t-1] + x[t], V[t] = beta V[t-1] + I[t],
    output V[T]. alpha 0, beta 1 is an integrator: V[T] = sum_t x[t]. Its alpha and beta are fixed."""

    def __init__(self, alpha: float | torch.Tensor, beta: float | torch.Tensor, backend: str = "reference"):
        super().__init__()
        self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32).clone())
        self.register_buffer("beta", torch.as_tensor(beta, dtype=torch.float32).clone())
        self.set_backend(backend)

    @property
    def integrator(self) -> bool:
        return bool(torch.all(self.alpha == 0)) and bool(torch.all(self.beta == 1))

    def set_backend(self, backend: str | Backend, device: torch.device | str = "cpu") -> None:
        self.backend = _backend(backend, device)

    def forward(self, currents: torch.Tensor) -> torch.Tensor:
        self.backend.check_tensor(currents)
        return self.backend.readout(currents, self.alpha, self.beta)
