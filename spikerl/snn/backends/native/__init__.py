"""The `native` backend: the CUBA-LIF loop, its backward and the readout as C++ PyTorch operators.

cuba_lif.cpp defines the operators `spikerl::cuba_lif_forward`, `cuba_lif_backward`,
`leaky_readout_forward` and `leaky_readout_backward` with `TORCH_LIBRARY`; PyTorch's own extension
machinery (`torch.utils.cpp_extension`) compiles it on first use with the system's C++ compiler and
caches the library (in $SPIKERL_CACHE, else ~/.cache/spikerl), once per source, flags, PyTorch and
CPU. Autograd and shape-only ("fake") implementations are registered here with `torch.library`, so
the operators compose with autograd and torch.compile and are called like any torch op, with no
marshalling per call. CPU and float32 only; the arithmetic is torch's, rounding for rounding, so
spikes equal the reference backend's and gradients agree to float tolerance. The forward keeps only
its input currents for the backward, which recomputes the neuron states from them (the first
layer's constant current is one row per batch entry, so its saved activations shrink T times).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
from pathlib import Path

import torch

from spikerl.errors import SpikerlError
from spikerl.snn.backends import Backend, steps_of
from spikerl.snn.neuron import CubaLIFParams, check_reset

SOURCE = Path(__file__).with_name("cuba_lif.cpp")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
SURROGATES = {"fast_sigmoid": 0, "atan": 1, "rectangular": 2}
_built = False


def _cpu_signature() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return platform.machine() + flags


def build_directory() -> Path:
    """Where the operators are compiled and cached: one directory per source, PyTorch, CPU and flags."""
    key = hashlib.sha256("\0".join([SOURCE.read_text(), torch.__version__, _cpu_signature(), *FLAGS]).encode())
    return Path(os.environ.get("SPIKERL_CACHE", Path.home() / ".cache" / "spikerl")) / f"spikerl_native_{key.hexdigest()[:12]}"


def build() -> None:
    """Compile (or load from the cache) the operators and register their Python parts; once per process."""
    global _built
    if _built:
        return
    compilers = [name for name in (os.environ.get("CXX"), "c++", "g++", "clang++") if name and shutil.which(name)]
    if not compilers:
        raise SpikerlError("the native backend compiles C++ kernels on first use and found no C++ compiler "
                           "(set CXX, or install g++); or choose network.backend fused")
    import logging

    # Importing cpp_extension warns about CUDA on machines without it; that is not this CPU build's concern.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    build_dir = build_directory()
    name = build_dir.name
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        # Compiled from a copy in the cache: the build files name the source's path, so two checkouts of
        # spikerl (a worktree, a fresh clone) would otherwise rebuild the shared library in turn.
        source = build_dir / SOURCE.name
        if not source.exists():  # the directory's name is the source's hash: an existing copy is this source
            partial = build_dir / f"{SOURCE.name}.{os.getpid()}.partial"
            shutil.copyfile(SOURCE, partial)
            os.replace(partial, source)
        cpp_extension.load(name=name, sources=[str(source)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                           build_directory=str(build_dir), is_python_module=False, verbose=False)
    except OSError as exc:
        raise SpikerlError(f"cannot build the native backend's kernels in {build_dir}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - the compiler's failure, however cpp_extension reports it
        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise SpikerlError(f"building the native backend's kernels failed ({last}); choose network.backend fused") from None
    _register_python_parts()
    _built = True


# ---------------------------------------------------------------------------- autograd and fake kernels


def _forward_setup(ctx, inputs, output):
    currents, steps, alpha, beta, theta, hard, detach, kind, scale = inputs
    ctx.save_for_backward(currents, alpha, beta, theta)
    ctx.steps, ctx.hard, ctx.detach, ctx.kind, ctx.scale = steps, hard, detach, kind, scale


def _forward_backward(ctx, grad_spikes):
    currents, alpha, beta, theta = ctx.saved_tensors
    need_alpha, need_beta, need_theta = ctx.needs_input_grad[2:5]
    # One gradient for every step (an integrator readout's, expanded over T) is read as one [R, n] row.
    grad_spikes = (grad_spikes[0] if grad_spikes.stride(0) == 0 else grad_spikes).contiguous()
    grad_x, *rows = torch.ops.spikerl.cuba_lif_backward(
        grad_spikes, currents, ctx.steps, alpha, beta, theta, ctx.hard, ctx.detach, ctx.kind, ctx.scale,
        need_alpha, need_beta, need_theta)
    groups, n = alpha.shape
    # Per-row parameter gradients summed within each parameter row's group of batch rows.
    grads = [g.view(groups, -1, n).sum(dim=1) if need else None
             for g, need in zip(rows, (need_alpha, need_beta, need_theta))]
    return grad_x, None, *grads, None, None, None, None


def _readout_setup(ctx, inputs, output):
    currents, alpha, beta = inputs
    ctx.save_for_backward(alpha, beta)
    ctx.steps = currents.shape[0]


def _readout_backward(ctx, grad_out):
    alpha, beta = ctx.saved_tensors
    return torch.ops.spikerl.leaky_readout_backward(grad_out.contiguous(), ctx.steps, alpha, beta), None, None


def _register_python_parts() -> None:
    lib = torch.library
    lib.register_autograd("spikerl::cuba_lif_forward", _forward_backward, setup_context=_forward_setup)
    lib.register_autograd("spikerl::leaky_readout_forward", _readout_backward, setup_context=_readout_setup)

    @lib.register_fake("spikerl::cuba_lif_forward")
    def _(currents, steps, alpha, beta, theta, hard, detach, kind, scale):
        return currents.new_empty(steps, *currents.shape[-2:])

    @lib.register_fake("spikerl::cuba_lif_backward")
    def _(grad_spikes, currents, steps, alpha, beta, theta, hard, detach, kind, scale, need_a, need_b, need_t):
        rows = currents.new_empty(currents.shape[-2:]) if (need_a or need_b or need_t) else currents.new_empty(0, currents.shape[-1])
        none = currents.new_empty(0)
        return (torch.empty_like(currents), rows if need_a else none, rows.clone() if need_b else none,
                rows.clone() if need_t else none)

    @lib.register_fake("spikerl::leaky_readout_forward")
    def _(currents, alpha, beta):
        return currents.new_empty(currents.shape[1:])

    @lib.register_fake("spikerl::leaky_readout_backward")
    def _(grad_out, steps, alpha, beta):
        return grad_out.new_empty(steps, *grad_out.shape)


# ---------------------------------------------------------------------------- the backend


def _grouped(params: tuple[torch.Tensor, ...], batch: torch.Size, n: int) -> list[torch.Tensor]:
    """Parameters as the kernels take them: [P, n], where row r of the flattened batch uses parameter row
    r // (R / P). P covers the leading batch dimensions up to the last one any parameter varies along
    (P = 1 for a layer-wide or per-neuron value; the agents for per-agent rows [agents, 1, n])."""
    if all(p.dim() <= 1 or p.numel() == p.shape[-1] for p in params):  # layer-wide or per-neuron values
        # (a population of one's [1, 1, n] too): one row, no copies
        return [p.reshape(1, n) if p.numel() == n else p.reshape(1, 1).expand(1, n).contiguous() for p in params]
    dims = len(batch) + 1
    if any(p.dim() > dims for p in params):
        raise SpikerlError("membrane parameters have more dimensions than the layer's input")
    padded = [p.reshape((1,) * (dims - p.dim()) + tuple(p.shape)) for p in params]
    varying = max((i + 1 for p in padded for i, size in enumerate(p.shape[:-1]) if size != 1), default=0)
    shape = (*batch[:varying], *([1] * (len(batch) - varying)), n)
    return [p.expand(shape).reshape(-1, n).contiguous() for p in padded]


def _call(op, *args):
    """Call an operator; with gradients off, below the autograd layer. torch.library's autograd kernel is
    Python: on a batch-1 action (three calls) it cost about a third of the operators' time, for nothing."""
    if torch.is_grad_enabled():
        return op(*args)
    with torch._C._AutoDispatchBelowAutograd():  # what torch.library's own autograd kernel does below it
        return op(*args)


class NativeBackend(Backend):
    name = "native"
    devices = ("cpu",)
    dtypes = (torch.float32,)

    def ensure_available(self) -> None:
        build()

    def _run(self, currents, params: CubaLIFParams, reset, steps, spike_fn=None, detach_reset=True):
        check_reset(reset)
        build()
        constant = steps is not None
        steps, n = steps_of(currents, steps), currents.shape[-1]
        batch = currents.shape[:-1] if constant else currents.shape[1:-1]
        flat = currents.reshape(-1, n) if constant else currents.reshape(steps, -1, n)
        alpha, beta, theta = _grouped((params.alpha, params.beta, params.theta), batch, n)
        kind, scale = (SURROGATES[spike_fn.name], float(spike_fn.scale)) if spike_fn is not None else (0, 1.0)
        spikes = _call(torch.ops.spikerl.cuba_lif_forward.default, flat.contiguous(), steps, alpha, beta, theta,
                       reset == "hard", detach_reset, kind, scale)
        return spikes.view(steps, *batch, n)

    def multistep(self, currents, params, spike_fn, reset, detach_reset, steps):
        return self._run(currents, params, reset, steps, spike_fn, detach_reset)

    @torch.no_grad()
    def multistep_no_grad(self, currents, params, reset, steps):
        return self._run(currents, params, reset, steps)

    def readout(self, currents, alpha, beta):
        build()
        steps, batch, n = currents.shape[0], currents.shape[1:-1], currents.shape[-1]
        alpha, beta = _grouped((alpha.float(), beta.float()), batch, n)
        out = _call(torch.ops.spikerl.leaky_readout_forward.default, currents.reshape(steps, -1, n).contiguous(),
                    alpha, beta)
        return out.view(*batch, n)
