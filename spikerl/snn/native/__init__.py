"""The `native` backend: the multi-step CUBA-LIF loop and its backward as one compiled C kernel each.

Chosen explicitly (`network.backend: native` for updates, `network.inference: native` for passes
without gradients), never switched to on its own. The C source (cuba_lif.c) is compiled on first use
with the system's C compiler ($CC, else cc or gcc) into ~/.cache/spikerl (or $SPIKERL_CACHE), once
per source, compiler and CPU; a missing compiler is one clear error when the network is built.
CPU and float32 only. The arithmetic is torch's, rounding for rounding, so spikes equal the
reference path's and gradients agree to float tolerance (tests/test_fused.py, test_inference.py). The
forward keeps only its input currents for the backward, which recomputes the neuron states from them
(the first layer's constant current is one [B, n] row, so its saved activations shrink T times).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from spikerl.errors import SpikerlError
from spikerl.snn.neuron import CubaLIFParams, check_reset, records_gradient
from spikerl.snn.surrogate import SpikeFunction

SOURCE = Path(__file__).with_name("cuba_lif.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-std=gnu99", "-shared", "-fPIC"]
THREADING = ["-fopenmp"]  # batch rows over torch.get_num_threads() threads; left out if the compiler lacks it
_SURROGATES = {"fast_sigmoid": 0, "atan": 1, "rectangular": 2}
_library: ctypes.CDLL | None = None


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise SpikerlError("the native backend compiles a small C kernel on first use and found no C compiler "
                       "(set CC, or install gcc); or choose network.backend fused and network.inference fast")


def _cpu_signature() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return platform.machine() + flags


def library() -> ctypes.CDLL:
    """The compiled kernels, built once per source, compiler and CPU, and cached."""
    global _library
    if _library is not None:
        return _library
    compiler = _compiler()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, _cpu_signature(), *FLAGS, *THREADING]).encode())
    cache = Path(os.environ.get("SPIKERL_CACHE", Path.home() / ".cache" / "spikerl"))
    path = cache / f"cuba_lif-{key.hexdigest()[:16]}.so"
    if not path.is_file():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:  # then a rename: concurrent builds never clash
                built = Path(tmp) / path.name
                for threading in (THREADING, []):
                    result = subprocess.run([compiler, *FLAGS, *threading, str(SOURCE), "-o", str(built), "-lm"],
                                            capture_output=True, text=True)
                    if result.returncode == 0:
                        break
                if result.returncode != 0:
                    raise SpikerlError(f"compiling the native backend's kernel with {compiler} failed: "
                                       + (result.stderr.strip().splitlines() or ["no message"])[-1])
                os.replace(built, path)
        except OSError as exc:
            raise SpikerlError(f"cannot build the native backend's kernel in {cache}: {exc.strerror or exc}") from None
    lib = ctypes.CDLL(str(path))
    i64, ptr, i32, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.cuba_lif_forward.argtypes = [ptr, i64, i64, i64, i64, ptr, i32, ptr, i32, ptr, i32, i32, ptr, i32]
    lib.cuba_lif_backward.argtypes = [ptr, i64, ptr, i64, i64, i64, i64, ptr, i32, ptr, i32, ptr, i32, i32, i32, i32,
                                      f32, ptr, ptr, ptr, ptr, i32]
    lib.leaky_readout_forward.argtypes = [ptr, i64, i64, i64, ptr, i32, ptr, i32, ptr]
    lib.leaky_readout_backward.argtypes = [ptr, i64, i64, i64, ptr, i32, ptr, i32, ptr]
    for kernel in (lib.cuba_lif_forward, lib.cuba_lif_backward, lib.leaky_readout_forward, lib.leaky_readout_backward):
        kernel.restype = i32
    _library = lib
    return lib


def _ptr(tensor: torch.Tensor | None) -> int | None:
    """The address ctypes passes for a c_void_p argument (a plain int: the cheapest conversion per call)."""
    return None if tensor is None else tensor.data_ptr()


def _param(value: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A parameter as the kernels take it: float32 data and 1 if it holds one value per neuron, else 0."""
    if value.requires_grad:
        value = value.detach()
    if value.dtype is not torch.float32:
        value = value.float()
    return (value.contiguous(), 1) if value.dim() else (value, 0)


def _params(*values: torch.Tensor) -> list:
    """ctypes arguments (pointer, per-neuron flag) for each parameter; the tensors stay alive in the list."""
    out = []
    for value in values:
        tensor, per_neuron = _param(value)
        out += [tensor, per_neuron]
    return out


def _args(params: list) -> list:
    return [_ptr(p) if isinstance(p, torch.Tensor) else p for p in params]


def _check(code: int) -> None:
    if code != 0:
        raise MemoryError("the native CUBA-LIF kernel could not allocate its scratch rows")


def _forward(currents: torch.Tensor, steps: int, params: list, hard: bool) -> torch.Tensor:
    """Spikes [T, B, n] for contiguous currents [T, B, n], or [B, n] given at every step (constant)."""
    constant = currents.dim() == 2
    batch, n = currents.shape[-2:]
    spikes = currents.new_empty(steps, batch, n)
    _check(library().cuba_lif_forward(_ptr(currents), 0 if constant else batch * n, steps, batch, n,
                                      *_args(params), int(hard), _ptr(spikes), torch.get_num_threads()))
    return spikes


class _NativeCubaLIF(torch.autograd.Function):
    """Keeps only its input currents (the first layer's as one [B, n] row): the backward recomputes the
    states from them, which costs less than writing them out in the forward and reading them back."""

    @staticmethod
    def forward(ctx, currents, alpha, beta, theta, steps, spike_fn, reset, detach_reset):
        params = _params(alpha, beta, theta)
        currents = currents.contiguous()
        ctx.save_for_backward(currents, *params[::2])
        ctx.per_neuron, ctx.steps = params[1::2], steps
        ctx.shapes = (alpha.shape, beta.shape, theta.shape)
        ctx.spike_fn, ctx.hard, ctx.detach = spike_fn, reset == "hard", detach_reset
        return _forward(currents, steps, params, ctx.hard)

    @staticmethod
    def backward(ctx, grad_spikes):
        currents, alpha, beta, theta = ctx.saved_tensors
        batch, n = currents.shape[-2:]
        constant = currents.dim() == 2
        need_alpha, need_beta, need_theta = ctx.needs_input_grad[1:4]
        grad_x = torch.empty_like(currents)
        # One gradient for every step (an integrator readout's, expanded over T) is read as one [B, n] row.
        same_each_step = grad_spikes.stride(0) == 0
        grad_spikes = (grad_spikes[0] if same_each_step else grad_spikes).contiguous()  # held: passed by address
        sums = [currents.new_empty(n) if need else None for need in (need_alpha, need_beta, need_theta)]
        _check(library().cuba_lif_backward(
            _ptr(grad_spikes), 0 if same_each_step else batch * n,
            _ptr(currents), 0 if constant else batch * n, ctx.steps, batch, n,
            *_args([alpha, ctx.per_neuron[0], beta, ctx.per_neuron[1], theta, ctx.per_neuron[2]]),
            int(ctx.hard), int(ctx.detach), _SURROGATES[ctx.spike_fn.name], float(ctx.spike_fn.scale),
            _ptr(grad_x), *[_ptr(s) for s in sums], torch.get_num_threads()))
        grads = [None if s is None else (s.sum() if len(shape) == 0 else s.reshape(shape))
                 for s, shape in zip(sums, ctx.shapes)]
        return grad_x, *grads, None, None, None, None


def _check_tensor(currents: torch.Tensor) -> None:
    if not currents.is_cpu or currents.dtype is not torch.float32:
        raise SpikerlError(f"the native backend runs float32 on the CPU; got {currents.dtype} on {currents.device}")


def cuba_lif_multistep_native(input_currents: torch.Tensor, params: CubaLIFParams, spike_fn: SpikeFunction,
                              reset: str = "hard", detach_reset: bool = True, steps: int | None = None) -> torch.Tensor:
    """As `neuron.cuba_lif_multistep`: [T, B, n] currents in, [T, B, n] spikes out. With `steps`, the input
    is one [B, n] current given at every step (the first layer's constant encoding), never copied T times."""
    check_reset(reset)
    _check_tensor(input_currents)
    steps = input_currents.shape[0] if steps is None else steps
    if not records_gradient(input_currents, params):
        currents = input_currents.detach().contiguous()
        return _forward(currents, steps, _params(params.alpha, params.beta, params.theta), reset == "hard")
    return _NativeCubaLIF.apply(input_currents, params.alpha, params.beta, params.theta, steps, spike_fn, reset,
                                detach_reset)


cuba_lif_multistep_native.takes_constant_input = True  # the network passes [B, n] and steps for a constant input


def _readout_forward(currents: torch.Tensor, params: list) -> torch.Tensor:
    steps, batch, n = currents.shape
    out = currents.new_empty(batch, n)
    _check(library().leaky_readout_forward(_ptr(currents), steps, batch, n, *_args(params), _ptr(out)))
    return out


class _NativeReadout(torch.autograd.Function):
    """The readout's V[T]; gradients flow to the input currents (the readout's alpha and beta are fixed)."""

    @staticmethod
    def forward(ctx, currents, alpha, beta):
        params = _params(alpha, beta)
        ctx.save_for_backward(*params[::2])
        ctx.per_neuron, ctx.steps = params[1::2], currents.shape[0]
        return _readout_forward(currents.contiguous(), params)

    @staticmethod
    def backward(ctx, grad_out):
        alpha, beta = ctx.saved_tensors
        grad_out = grad_out.contiguous()  # held here: a temporary would be freed before the call
        batch, n = grad_out.shape
        grad_x = grad_out.new_empty(ctx.steps, batch, n)
        _check(library().leaky_readout_backward(_ptr(grad_out), ctx.steps, batch, n,
                                                *_args([alpha, ctx.per_neuron[0], beta, ctx.per_neuron[1]]),
                                                _ptr(grad_x)))
        return grad_x, None, None


def leaky_readout_native(input_currents: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The non-spiking readout's V[T] (as `neuron.leaky_readout`) for [T, B, n] currents; differentiable in them."""
    _check_tensor(input_currents)
    if torch.is_grad_enabled() and input_currents.requires_grad:
        return _NativeReadout.apply(input_currents, alpha, beta)
    return _readout_forward(input_currents.detach().contiguous(), _params(alpha, beta))
