"""Decoders: hidden spikes [T, B, n] -> real outputs [B, out] (Q-values or pre-tanh actions).

    membrane:    a non-spiking CUBA layer, I[t] = a I[t-1] + W s[t], V[t] = b V[t-1] + I[t];
                 output V[T] (dsrl's DQN readout)
    integrator:  the same with a = 0, b = 1: V[T] = W sum_t s[t] (dsrl's TD3 actor; the actor adds tanh)
    population:  out * pop CUBA-LIF neurons, rates r = mean_t S[t], then out_k = w_k . r_k + c_k
                 per output dimension (PopSAN's grouped readout)
"""

from __future__ import annotations

import torch
from torch import nn

from spikerl.snn.membrane import MembraneParameters
from spikerl.snn.neuron import cuba_lif_multistep, leaky_readout
from spikerl.snn.surrogate import SpikeFunction


def snn_linear(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    """A linear layer with dsrl's initialisation W ~ N(0, 1 / fan_in)."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.normal_(layer.weight, mean=0.0, std=in_features**-0.5)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def time_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Apply a linear layer to [T, B, n] as one matrix product over T * B rows."""
    steps, batch, _ = x.shape
    return layer(x.reshape(steps * batch, -1)).reshape(steps, batch, -1)


class _IntegratorReadout(torch.autograd.Function):
    """V[T] = sum_t (W s[t] + b), computed as the readout computes it, with a backward that uses the
    sum: every step's spikes get the same gradient g W (returned expanded over T, never copied), and
    dL/dW = g^T sum_t s[t]. That replaces two products over T * B rows with two over B rows."""

    @staticmethod
    def forward(ctx, spikes, weight, bias, alpha, beta, readout):
        steps, batch, _ = spikes.shape
        currents = torch.nn.functional.linear(spikes.reshape(steps * batch, -1), weight, bias)
        ctx.save_for_backward(spikes, weight)
        ctx.has_bias = bias is not None
        return readout(currents.reshape(steps, batch, -1), alpha, beta)

    @staticmethod
    def backward(ctx, grad_out):
        spikes, weight = ctx.saved_tensors
        steps = spikes.shape[0]
        grad_spikes = (grad_out @ weight).unsqueeze(0).expand(steps, -1, -1) if ctx.needs_input_grad[0] else None
        grad_weight = grad_out.t() @ spikes.sum(dim=0) if ctx.needs_input_grad[1] else None
        grad_bias = grad_out.sum(dim=0) * steps if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_spikes, grad_weight, grad_bias, None, None, None


class MembraneDecoder(nn.Module):
    def __init__(self, in_features: int, out_features: int, alpha: float, beta: float, bias: bool = False):
        super().__init__()
        self.fc = snn_linear(in_features, out_features, bias)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("beta", torch.tensor(float(beta)))
        self.integrator = alpha == 0.0 and beta == 1.0

    def forward(self, spikes: torch.Tensor, multistep=None, readout=None, summed_backward: bool = False) -> torch.Tensor:
        """`readout(currents, alpha, beta)`: a faster path than `neuron.leaky_readout`. With summed_backward,
        an integrator's gradients are taken through the spike counts (the fast backends; same values
        forward, gradients to float tolerance)."""
        if summed_backward and self.integrator and torch.is_grad_enabled():
            return _IntegratorReadout.apply(spikes, self.fc.weight, self.fc.bias, self.alpha, self.beta,
                                            readout or leaky_readout)
        return (readout or leaky_readout)(time_linear(self.fc, spikes), self.alpha, self.beta)


class PopulationDecoder(nn.Module):
    def __init__(self, in_features: int, out_features: int, population_size: int, membrane: MembraneParameters,
                 spike_fn: SpikeFunction, reset: str, detach_reset: bool, bias: bool = False,
                 multistep=cuba_lif_multistep):
        super().__init__()
        self.out_features, self.population_size = out_features, population_size
        self.fc = snn_linear(in_features, out_features * population_size, bias)
        self.membrane = membrane
        self.spike_fn, self.reset, self.detach_reset, self.multistep = spike_fn, reset, detach_reset, multistep
        self.readout_weight = nn.Parameter(torch.empty(out_features, population_size))
        nn.init.normal_(self.readout_weight, std=population_size**-0.5)
        self.readout_bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, spikes: torch.Tensor, multistep=None, readout=None, summed_backward: bool = False) -> torch.Tensor:
        out_spikes = (multistep or self.multistep)(time_linear(self.fc, spikes), self.membrane.params(), self.spike_fn,
                                                   self.reset, self.detach_reset)
        rates = out_spikes.mean(dim=0).reshape(-1, self.out_features, self.population_size)
        return (rates * self.readout_weight).sum(dim=-1) + self.readout_bias
