"""The fused multi-step CUBA-LIF path: one autograd node per layer with an analytic backward.

The forward runs the same recurrence as `neuron.cuba_lif_step`, op for op, so spikes are identical
to the reference path; it records no autograd graph. It keeps only the pre-reset voltages (and,
when alpha or beta are learned, the currents and post-reset voltages). The backward walks the T
steps in reverse with the gradients worked out by hand below, which agree with autograd through
the reference path to float tolerance (tests/test_fused.py).

Backward, per step t from T down to 1, with sg = surrogate'(Vpre[t] - theta), s = S[t],
gV = dL/dV[t] (post-reset, arriving from step t+1), gS = dL/dS[t]:

    gVpre  = gS sg + gV dV/dVpre        hard: (1 - s) [- Vpre sg if the reset is not detached]
                                        subtract: 1    [- theta sg if not detached]
    gtheta = -gS sg + gV dV/dtheta      hard: [Vpre sg if not detached]; subtract: -s [+ theta sg]
    gI     = gVpre + alpha gI[t+1]      (also dL/dx[t])
    galpha += gI I[t-1];  gbeta += gVpre V[t-1];  gV for step t-1 = beta gVpre
"""

from __future__ import annotations

import torch

from spikerl.snn.neuron import CubaLIFParams
from spikerl.snn.surrogate import SpikeFunction, heaviside


def _reduce_like(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum a [B, N] gradient down to the shape of a scalar or per-neuron parameter."""
    if like.dim() == 0:
        return grad.sum()
    return grad.sum(dim=0).reshape(like.shape)


class _FusedCubaLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, currents, alpha, beta, theta, spike_fn, reset, detach_reset):
        steps = currents.shape[0]
        keep_states = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        current = torch.zeros_like(currents[0])
        voltage = torch.zeros_like(currents[0])
        spikes = torch.empty_like(currents)
        pre_voltages = torch.empty_like(currents)
        if keep_states:
            all_currents = torch.empty_like(currents)
            post_voltages = torch.empty_like(currents)
        for t in range(steps):
            current = alpha * current + currents[t]
            voltage = beta * voltage + current
            pre_voltages[t] = voltage
            s = heaviside(voltage - theta)
            spikes[t] = s
            voltage = voltage * (1.0 - s) if reset == "hard" else voltage - theta * s
            if keep_states:
                all_currents[t] = current
                post_voltages[t] = voltage
        saved = [pre_voltages, alpha, beta, theta]
        if keep_states:
            saved += [all_currents, post_voltages]
        ctx.save_for_backward(*saved)
        ctx.spike_fn, ctx.reset, ctx.detach_reset, ctx.keep_states = spike_fn, reset, detach_reset, keep_states
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        pre_voltages, alpha, beta, theta, *states = ctx.saved_tensors
        spike_fn, hard, detach = ctx.spike_fn, ctx.reset == "hard", ctx.detach_reset
        steps = pre_voltages.shape[0]
        grad_currents = torch.empty_like(pre_voltages)
        need_alpha, need_beta, need_theta = ctx.needs_input_grad[1:4]
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
            grad_currents[t] = grad_i
            if t > 0 and need_alpha:
                g = grad_i * states[0][t - 1]
                g_alpha = g if g_alpha is None else g_alpha + g
            if t > 0 and need_beta:
                g = grad_vpre * states[1][t - 1]
                g_beta = g if g_beta is None else g_beta + g
            grad_v = beta * grad_vpre
            grad_i_next = grad_i
        if need_alpha:
            g_alpha = _reduce_like(g_alpha if g_alpha is not None else torch.zeros_like(grad_v), alpha)
        if need_beta:
            g_beta = _reduce_like(g_beta if g_beta is not None else torch.zeros_like(grad_v), beta)
        if need_theta:
            g_theta = _reduce_like(g_theta, theta)
        return grad_currents, g_alpha, g_beta, g_theta, None, None, None


def cuba_lif_multistep_fused(
    input_currents: torch.Tensor,
    params: CubaLIFParams,
    spike_fn: SpikeFunction,
    reset: str = "hard",
    detach_reset: bool = True,
) -> torch.Tensor:
    """Same contract as `neuron.cuba_lif_multistep`: [T, B, n] currents in, [T, B, n] spikes out."""
    if reset not in ("hard", "subtract"):
        raise ValueError(f"unknown reset {reset!r}; choose 'hard' or 'subtract'")
    if not torch.is_grad_enabled() or not (input_currents.requires_grad or params.alpha.requires_grad
                                           or params.beta.requires_grad or params.theta.requires_grad):
        with torch.no_grad():
            return _FusedCubaLIF.forward(_NoCtx(), input_currents, params.alpha, params.beta, params.theta,
                                         spike_fn, reset, detach_reset)
    return _FusedCubaLIF.apply(input_currents, params.alpha, params.beta, params.theta, spike_fn, reset, detach_reset)


class _NoCtx:
    """Stands in for autograd's context when nothing needs a gradient: keeps nothing."""

    needs_input_grad = (False,) * 7

    def save_for_backward(self, *tensors):
        pass
