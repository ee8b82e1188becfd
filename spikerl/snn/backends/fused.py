"""The fused backends: one autograd node per layer with an analytic backward, in torch operations.

`fused` runs the two loops below eagerly; `compiled` runs the same loops through `torch.compile`,
which fuses each loop over all T steps into one kernel (C++ on the CPU, Triton on CUDA). The
forward loop is `neuron.cuba_lif_step`'s arithmetic, op for op, so spikes are identical to the
reference backend's; it records no autograd graph and keeps only the pre-reset voltages (and, when
alpha or beta are learned, the currents and post-reset voltages). The input is [T, *batch, n]
currents, or one [*batch, n] current given at every step (the first layer's constant encoding),
never copied T times. The backward loop walks the steps in reverse with the gradients worked out by
hand below, which agree with autograd through the reference loop to float tolerance
(tests/test_backends.py).

Backward, per step t from T down to 1, with sg = surrogate'(Vpre[t] - theta), s = S[t],
gV = dL/dV[t] (post-reset, arriving from step t+1), gS = dL/dS[t]:

    gVpre  = gS sg + gV dV/dVpre        hard: (1 - s) [- Vpre sg if the reset is not detached]
                                        subtract: 1    [- theta sg if not detached]
    gtheta = -gS sg + gV dV/dtheta      hard: [Vpre sg if not detached]; subtract: -s [+ theta sg]
    gI     = gVpre + alpha gI[t+1]      (also dL/dx[t]; summed over t for a constant input)
    galpha += gI I[t-1];  gbeta += gVpre V[t-1];  gV for step t-1 = beta gVpre
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from spikerl.errors import SpikerlError
from spikerl.snn.backends import Backend, get_backend, steps_of
from spikerl.snn.neuron import check_reset
from spikerl.snn.surrogate import SpikeFunction, heaviside


def forward_loop(currents: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, theta: torch.Tensor, steps: int,
                 constant: bool, hard: bool, keep_voltages: bool, keep_states: bool):
    """Spikes [T, *batch, n]; with keep_voltages the pre-reset voltages, with keep_states the currents
    and post-reset voltages (both [T, *batch, n], else None). `constant`: currents is one step's input."""
    current = voltage = torch.zeros_like(currents if constant else currents[0])
    spikes, pre_voltages, all_currents, post_voltages = [], [], [], []
    for t in range(steps):
        current = alpha * current + (currents if constant else currents[t])
        voltage = beta * voltage + current
        s = heaviside(voltage - theta)
        spikes.append(s)
        if keep_voltages:
            pre_voltages.append(voltage)
        voltage = voltage * (1.0 - s) if hard else voltage - theta * s
        if keep_states:
            all_currents.append(current)
            post_voltages.append(voltage)
    stacked = [torch.stack(kept) if kept else None for kept in (pre_voltages, all_currents, post_voltages)]
    return torch.stack(spikes), *stacked


def _reduce_like(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum a [*batch, n] gradient down to the shape of a parameter that broadcast against it."""
    return grad.sum_to_size(like.shape)


def backward_loop(grad_spikes: torch.Tensor, pre_voltages: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                  theta: torch.Tensor, all_currents: torch.Tensor | None, post_voltages: torch.Tensor | None,
                  spike_fn: SpikeFunction, hard: bool, detach: bool, constant: bool, need_theta: bool):
    """dL/dcurrents ([T, *batch, n], or [*batch, n] summed over steps when constant) and dL/d alpha, beta, theta
    (None where not needed; alpha and beta need the kept states)."""
    steps = pre_voltages.shape[0]
    grad_currents = []
    g_alpha = g_beta = g_theta = None
    grad_i_next = torch.zeros_like(pre_voltages[0])
    grad_v = torch.zeros_like(pre_voltages[0])  # dL/dV[t] after reset, from step t+1
    for t in range(steps - 1, -1, -1):
        v_pre = pre_voltages[t]
        x = v_pre - theta
        sg = spike_fn.derivative(x)
        s = heaviside(x)
        g_from_spike = grad_spikes[t] * sg
        if hard:
            dv_dvpre = 1.0 - s if detach else 1.0 - s - v_pre * sg
            dv_dtheta = None if detach else v_pre * sg
        else:
            dv_dvpre = 1.0 if detach else 1.0 - theta * sg
            dv_dtheta = -s if detach else theta * sg - s
        grad_vpre = g_from_spike + grad_v * dv_dvpre
        if need_theta:
            g = -g_from_spike if dv_dtheta is None else grad_v * dv_dtheta - g_from_spike
            g_theta = g if g_theta is None else g_theta + g
        grad_i = grad_vpre + alpha * grad_i_next
        grad_currents.append(grad_i)
        if t > 0 and all_currents is not None:
            g = grad_i * all_currents[t - 1]
            g_alpha = g if g_alpha is None else g_alpha + g
        if t > 0 and post_voltages is not None:
            g = grad_vpre * post_voltages[t - 1]
            g_beta = g if g_beta is None else g_beta + g
        grad_v = beta * grad_vpre
        grad_i_next = grad_i
    if constant:
        grad_x = grad_currents[0]
        for g in grad_currents[1:]:
            grad_x = grad_x + g
    else:
        grad_x = torch.stack(grad_currents[::-1])
    if all_currents is not None:
        g_alpha = _reduce_like(g_alpha if g_alpha is not None else torch.zeros_like(grad_v), alpha)
    if post_voltages is not None:
        g_beta = _reduce_like(g_beta if g_beta is not None else torch.zeros_like(grad_v), beta)
    if need_theta:
        g_theta = _reduce_like(g_theta, theta)
    return grad_x, g_alpha, g_beta, g_theta


class Loops(NamedTuple):
    forward: Callable
    backward: Callable


EAGER = Loops(forward_loop, backward_loop)


class _FusedCubaLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, currents, alpha, beta, theta, steps, constant, loops, spike_fn, reset, detach_reset):
        keep_states = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        spikes, pre_voltages, all_currents, post_voltages = loops.forward(
            currents, alpha, beta, theta, steps, constant, reset == "hard", True, keep_states)
        ctx.save_for_backward(pre_voltages, alpha, beta, theta, *([all_currents, post_voltages] if keep_states else []))
        ctx.loops, ctx.spike_fn, ctx.reset, ctx.detach_reset, ctx.constant = loops, spike_fn, reset, detach_reset, constant
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        pre_voltages, alpha, beta, theta, *states = ctx.saved_tensors
        all_currents, post_voltages = states if states else (None, None)
        grads = ctx.loops.backward(grad_spikes, pre_voltages, alpha, beta, theta,
                                   all_currents if ctx.needs_input_grad[1] else None,
                                   post_voltages if ctx.needs_input_grad[2] else None,
                                   ctx.spike_fn, ctx.reset == "hard", ctx.detach_reset, ctx.constant,
                                   ctx.needs_input_grad[3])
        return *grads, None, None, None, None, None, None


class FusedBackend(Backend):
    name = "fused"

    def loops(self) -> Loops:
        return EAGER

    def multistep(self, currents, params, spike_fn, reset, detach_reset, steps):
        check_reset(reset)
        return _FusedCubaLIF.apply(currents, params.alpha, params.beta, params.theta, steps_of(currents, steps),
                                   steps is not None, self.loops(), spike_fn, reset, detach_reset)

    @torch.no_grad()
    def multistep_no_grad(self, currents, params, reset, steps):
        check_reset(reset)
        return self.loops().forward(currents, params.alpha, params.beta, params.theta, steps_of(currents, steps),
                                    steps is not None, reset == "hard", False, False)[0]

    def readout(self, currents, alpha, beta):
        return get_backend("reference").readout(currents, alpha, beta)  # a readout is cheap: nothing to fuse


# ------------------------------------------------------------------------------------- compiled

_compiled: Loops | None = None


def _compile_errors(function: Callable) -> Callable:
    """A failure inside torch.compile (no C++ compiler, no Triton, an unsupported platform) is one clear
    error naming the backend, not a traceback from deep inside the compiler."""

    def run(*args):
        try:
            return function(*args)
        except Exception as exc:  # noqa: BLE001 - only the compiler's own errors are translated
            if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise SpikerlError(f"network.backend 'compiled': torch.compile failed ({message}); "
                               "choose fused (or native on the CPU)") from None

    return run


def compiled_loops() -> Loops:
    """The two loops through torch.compile, built once per process (each shape and T compiles once)."""
    global _compiled
    if _compiled is None:
        import torch._dynamo.config

        # Each layer width, batch shape, T, reset and kept state is a variant of the same two functions; a
        # network and its target, acting and updating, need more of them than Dynamo's default limit of 8.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        _compiled = Loops(_compile_errors(torch.compile(forward_loop, fullgraph=True)),
                          _compile_errors(torch.compile(backward_loop, fullgraph=True)))
    return _compiled


def check_compiled_available() -> None:
    """Fail when the network is built, not at its first update, where torch.compile cannot work."""
    import shutil

    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise SpikerlError("network.backend 'compiled' needs torch.compile, which this Python and "
                           f"PyTorch {torch.__version__} do not support; choose fused (or native on the CPU)")
    if not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        raise SpikerlError("network.backend 'compiled' needs a C++ compiler for torch.compile on the "
                           "CPU (install g++); choose fused or native")


class CompiledBackend(FusedBackend):
    """The fused backend with both loops compiled: on CUDA, each layer's T steps are one Triton kernel."""

    name = "compiled"

    def ensure_available(self) -> None:
        check_compiled_available()

    def loops(self) -> Loops:
        return compiled_loops()
