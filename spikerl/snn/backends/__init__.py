"""The backend interface: how a spiking layer's T steps are computed, and the registry of backends.

Every backend is one object with the same small interface (`Backend` below): a multi-step forward
with gradients (training), a multi-step forward without (acting, targets, evaluation: no autograd,
in place where it can), the non-spiking readout, and what it supports (devices, dtypes, gradients,
learnable membrane parameters). A layer (`spikerl.snn.layer`) holds one and calls it; nothing else
dispatches on backends. Inputs are input currents [T, *batch, n], or one current [*batch, n] given at
every step (`steps` set: the first layer's constant encoding, never copied T times). Parameters
broadcast against [*batch, n]: a scalar, one value per neuron [n], or per agent [agents, 1, n].

    reference    the plain loop over `neuron.cuba_lif_step` (autograd through every step), and an
                 in-place loop without gradients; what every other backend is tested against
    fused        one autograd node per layer with a hand-derived backward (torch operations)
    compiled     the fused loops through torch.compile (C++ kernels on the CPU, Triton on CUDA)
    native       the loop and its backward as C++ PyTorch operators (CPU, float32)
    fixed_point  the integer (Loihi-like) model of a trained network: no gradients

`network.backend: auto` resolves once, with `resolve_backend`, to native on a CPU that can build it
(else fused, saying why) and to fused on CUDA, and the choice is recorded in the run's config.

To add a backend: subclass `Backend`, implement its three passes, state what it supports, add it to
`_FACTORIES` (and, if it trains, to `TRAINING_BACKENDS` and the `NetworkConfig.backend` choices);
tests/test_backends.py lists the registry and checks every backend against the reference.
"""

from __future__ import annotations

import importlib
import sys

import torch

from spikerl.errors import SpikerlError
from spikerl.snn.neuron import CubaLIFParams
from spikerl.snn.surrogate import SpikeFunction


class Backend:
    """One way to compute a CUBA-LIF layer over T steps. Stateless as far as callers can tell: one
    instance per process serves every layer (copies of a network share it)."""

    name: str = ""
    devices: tuple[str, ...] = ("cpu", "cuda")  # torch device types it runs on
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
    gradients: bool = True  # has a multi-step forward with gradients (can train)
    learnable: bool = True  # gives gradients to alpha, beta and theta

    def ensure_available(self) -> None:
        """Raise SpikerlError where this backend cannot run on this machine (called when a layer is built)."""

    def multistep(self, currents: torch.Tensor, params: CubaLIFParams, spike_fn: SpikeFunction, reset: str,
                  detach_reset: bool, steps: int | None) -> torch.Tensor:
        """Spikes [T, *batch, n], differentiable in the currents and (if `learnable`) the parameters."""
        raise SpikerlError(f"network.backend {self.name!r} has no forward pass with gradients; it cannot train")

    def multistep_no_grad(self, currents: torch.Tensor, params: CubaLIFParams, reset: str,
                          steps: int | None) -> torch.Tensor:
        """The same spikes, without autograd (acting, targets, evaluation)."""
        raise NotImplementedError

    def readout(self, currents: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """A non-spiking CUBA layer's membrane V[T] after T steps from rest, [*batch, n]; differentiable in
        the currents when gradients are on and the backend has them."""
        raise NotImplementedError

    def check_tensor(self, tensor: torch.Tensor) -> None:
        if tensor.device.type not in self.devices or tensor.dtype not in self.dtypes:
            dtypes = ", ".join(str(d).replace("torch.", "") for d in self.dtypes)
            raise SpikerlError(f"network.backend {self.name!r} runs {dtypes} on {' or '.join(self.devices)}; "
                               f"got {str(tensor.dtype).replace('torch.', '')} on {tensor.device}")

    def __deepcopy__(self, memo):
        return self  # target networks share the process's backend object

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


def steps_of(currents: torch.Tensor, steps: int | None) -> int:
    return currents.shape[0] if steps is None else steps


# name -> (module, class), imported on first use: a backend's dependencies load only when it is asked for.
_FACTORIES: dict[str, tuple[str, str]] = {
    "reference": ("spikerl.snn.backends.reference", "ReferenceBackend"),
    "fused": ("spikerl.snn.backends.fused", "FusedBackend"),
    "compiled": ("spikerl.snn.backends.fused", "CompiledBackend"),
    "native": ("spikerl.snn.backends.native", "NativeBackend"),
    "fixed_point": ("spikerl.snn.backends.fixed_point", "FixedPointBackend"),
}
TRAINING_BACKENDS = ("reference", "fused", "native", "compiled")  # what network.backend may name, besides auto
_instances: dict[str, Backend] = {}


def backend_names() -> list[str]:
    return list(_FACTORIES)


def get_backend(name: str) -> Backend:
    """The process's instance of the backend `name` (not checked for availability: see `resolve_backend`)."""
    if name not in _FACTORIES:
        raise SpikerlError(f"unknown backend {name!r}; choose one of auto, {', '.join(_FACTORIES)}")
    if name not in _instances:
        module, cls = _FACTORIES[name]
        _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]


_resolved_auto: dict[str, str] = {}


def resolve_backend(name: str, device: torch.device | str = "cpu", announce: bool = True) -> str:
    """The concrete backend for `name` on `device`, checked to run there. `auto`: native on a CPU that
    can build its kernels, else fused; fused on CUDA. An auto choice is made once per process and
    device type and announced on stderr."""
    device_type = torch.device(device).type
    if name != "auto":
        backend = get_backend(name)
        if device_type not in backend.devices:
            raise SpikerlError(f"network.backend {name!r} runs on {' or '.join(backend.devices)}, not {device_type}; "
                               f"choose {'fused or compiled' if device_type == 'cuda' else 'fused or native'}, or auto")
        backend.ensure_available()
        return name
    if device_type not in _resolved_auto:
        if device_type == "cpu":
            try:
                get_backend("native").ensure_available()
                choice, why = "native", "C++ kernels, built with this machine's compiler"
            except SpikerlError as exc:
                choice, why = "fused", f"native is unavailable: {exc}"
        else:
            # compiled (Triton) may be faster on a GPU but has not been timed there yet, and compiles
            # every shape for tens of seconds: fused is the measured-safe choice until it has been.
            choice, why = "fused", "the eager fused node; compiled is not yet measured on a GPU"
        _resolved_auto[device_type] = choice
        if announce:
            print(f"spikerl: network.backend auto -> {choice} on {device_type} ({why})", file=sys.stderr)
    return _resolved_auto[device_type]
