"""Decoders: hidden spikes [T, *batch, n] -> real outputs [*batch, out] (Q-values or pre-tanh actions).

    membrane:    a non-spiking CUBA layer, I[t] = a I[t-1] + W s[t], V[t] = b V[t-1] + I[t];
                 output V[T] (dsrl's DQN readout)
    integrator:  the same with a = 0, b = 1: V[T] = W sum_t s[t] (dsrl's TD3 actor; the actor adds tanh)
    population:  out * pop CUBA-LIF neurons, rates r = mean_t S[t], then out_k = w_k . r_k + c_k
                 per output dimension (PopSAN's grouped readout)

Each is a composition of `layer.py`'s layers behind a linear map.
"""

from __future__ import annotations

import torch
from torch import nn

from spikerl.snn.layer import CubaLIF, LeakyReadout
from spikerl.snn.stacked import linear


def snn_linear(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    """A linear layer with dsrl's initialisation W ~ N(0, 1 / fan_in)."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.normal_(layer.weight, mean=0.0, std=in_features**-0.5)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class IntegratorReadout(torch.autograd.Function):
    """V[T] = sum_t (W s[t] + b), computed forward as the readout computes it (so outputs equal the
    step-by-step readout's bit for bit), with a backward that uses the sum: every step's spikes get the
    same gradient g W (returned expanded over T, never copied), and dL/dW = g^T sum_t s[t]. That is two
    products over the batch rows instead of two over T times as many."""

    @staticmethod
    def forward(ctx, spikes, weight, bias, readout):
        ctx.save_for_backward(spikes, weight)
        ctx.has_bias = bias is not None
        return readout(linear(spikes, weight, bias))

    @staticmethod
    def backward(ctx, grad_out):
        spikes, weight = ctx.saved_tensors
        if weight.dim() == 3 and weight.shape[0] == 1:  # a population of one: one network's products
            grad_spikes, grad_weight, grad_bias = _integrator_grads(grad_out.squeeze(-3), spikes.squeeze(-3), weight[0], ctx)
            return (None if grad_spikes is None else grad_spikes.unsqueeze(-3),
                    None if grad_weight is None else grad_weight.unsqueeze(0),
                    None if grad_bias is None else grad_bias.view(1, 1, -1), None)
        return (*_integrator_grads(grad_out, spikes, weight, ctx), None)


def _integrator_grads(grad_out, spikes, weight, ctx):
    """Gradients of V[T] = sum_t (W s[t] + b) for spikes, W and b: one network (W [out, in]) or stacked agents
    (W [K, out, in], grad_out [K, B, out], each agent's rows to its own matrix)."""
    steps = spikes.shape[0]
    grad_spikes = (grad_out @ weight).unsqueeze(0).expand(steps, *grad_out.shape[:-1], -1) \
        if ctx.needs_input_grad[0] else None
    grad_weight = grad_bias = None
    if weight.dim() == 2:
        if ctx.needs_input_grad[1]:
            counts = spikes.sum(dim=0)
            grad_weight = grad_out.reshape(-1, grad_out.shape[-1]).t() @ counts.reshape(-1, counts.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(dim=0) * steps
    else:
        if ctx.needs_input_grad[1]:
            grad_weight = grad_out.transpose(-1, -2) @ spikes.sum(dim=0)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=-2, keepdim=True) * steps
    return grad_spikes, grad_weight, grad_bias


class MembraneDecoder(nn.Module):
    def __init__(self, in_features: int, out_features: int, alpha: float, beta: float, bias: bool = False,
                 backend: str = "reference"):
        super().__init__()
        self.fc = snn_linear(in_features, out_features, bias)
        self.readout = LeakyReadout(alpha, beta, backend)

    @property
    def alpha(self) -> torch.Tensor:
        return self.readout.alpha

    @property
    def beta(self) -> torch.Tensor:
        return self.readout.beta

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.readout.integrator:
            return IntegratorReadout.apply(spikes, self.fc.weight, self.fc.bias, self.readout)
        return self.readout(self.fc(spikes))


class PopulationDecoder(nn.Module):
    def __init__(self, in_features: int, out_features: int, population_size: int, neurons: CubaLIF, bias: bool = False):
        super().__init__()
        self.out_features, self.population_size = out_features, population_size
        self.fc = snn_linear(in_features, out_features * population_size, bias)
        self.neurons = neurons
        self.readout_weight = nn.Parameter(torch.empty(out_features, population_size))
        nn.init.normal_(self.readout_weight, std=population_size**-0.5)
        self.readout_bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        out_spikes = self.neurons(self.fc(spikes))
        rates = out_spikes.mean(dim=0)
        rates = rates.reshape(*rates.shape[:-1], self.out_features, self.population_size)
        return (rates * self.readout_weight).sum(dim=-1) + self.readout_bias
