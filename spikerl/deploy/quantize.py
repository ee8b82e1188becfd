"""Fixed-point evaluation: what a trained spiking policy keeps on Loihi-like integer hardware.

Per layer l (hidden layers and the readout), with weight scale s_l = max|W_l| / (2^(weight_bits-1) - 1):

    W_int = round(W / s_l)         b_int = round(b / s_l)         theta_int = max(1, round(theta / s_l))
    alpha_q = round(alpha 2^decay_bits) / 2^decay_bits             (Loihi: 12 bits, decays as x/4096)
    I[t] = trunc(alpha_q I[t-1]) + W_int s[t] + b_int              (integers, truncated toward zero)
    V[t] = trunc(beta_q V[t-1]) + I[t];  spike when V[t] > theta_int, then V[t] = 0
    I, V saturate at +-(2^(state_bits-1) - 1)

The first layer's input is the encoded observation, which is real-valued: it enters as an integer
current round(W_int x) computed once per decision (on Loihi, a bias current written by the
host). The readout's membrane is read out as V_int * s_readout. The float network is left as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from spikerl.errors import SpikerlError


@dataclass(frozen=True)
class QuantizationSpec:
    """Bit widths of the fixed-point model (defaults: Loihi's 8-bit weights, 12-bit decays, 24-bit states)."""

    weight_bits: int = 8
    decay_bits: int = 12
    state_bits: int = 24

    def __post_init__(self):
        for name, low, high in (("weight_bits", 2, 16), ("decay_bits", 1, 24), ("state_bits", 8, 48)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise SpikerlError(f"--{name.replace('_', '-')} must be in [{low}, {high}], got {value}")

    def describe(self) -> str:
        return (f"{self.weight_bits}-bit weights per layer, decays on a 1/{2**self.decay_bits} grid, "
                f"{self.state_bits}-bit integer states")

    def as_dict(self) -> dict:
        return asdict(self)


class _IntegerLayer:
    """One layer's integer weights, bias, decays and threshold (float64 tensors holding integers)."""

    def __init__(self, layer: nn.Linear, alpha, beta, theta, spec: QuantizationSpec):
        weight = layer.weight.detach().double()
        levels = 2 ** (spec.weight_bits - 1) - 1
        self.scale = float(weight.abs().max().clamp(min=1e-12)) / levels
        self.weight = torch.round(weight / self.scale)
        self.bias = torch.round(layer.bias.detach().double() / self.scale) if layer.bias is not None else None
        grid = 2.0**spec.decay_bits
        self.alpha = torch.round(torch.as_tensor(alpha).detach().double() * grid) / grid
        self.beta = torch.round(torch.as_tensor(beta).detach().double() * grid) / grid
        self.theta = None if theta is None else torch.round(theta.detach().double() / self.scale).clamp(min=1.0)
        self.limit = 2.0 ** (spec.state_bits - 1) - 1

    def current(self, x: torch.Tensor, integer_input: bool) -> torch.Tensor:
        out = x @ self.weight.T
        if not integer_input:
            out = torch.round(out)
        return out if self.bias is None else out + self.bias

    def step(self, current, voltage, drive):
        current = (torch.trunc(self.alpha * current) + drive).clamp(-self.limit, self.limit)
        voltage = (torch.trunc(self.beta * voltage) + current).clamp(-self.limit, self.limit)
        return current, voltage


class QuantizedSpikingMLP(nn.Module):
    """Integer-state simulation of a SpikingMLP (two-neuron or direct input, membrane or integrator readout)."""

    def __init__(self, net: nn.Module, spec: QuantizationSpec):
        super().__init__()
        from spikerl.snn.decoders import MembraneDecoder

        if not isinstance(net.decoder, MembraneDecoder) or not net.encoder.constant or net.reset != "hard":
            raise SpikerlError("fixed-point evaluation covers spiking networks with a constant input encoder "
                               "(two_neuron, direct), a membrane or integrator readout and hard reset")
        self.spec, self.encoder, self.timesteps = spec, net.encoder, net.timesteps
        self.hidden = [_IntegerLayer(layer, m.alpha, m.beta, m.theta, spec) for layer, m in zip(net.layers, net.membranes)]
        self.readout = _IntegerLayer(net.decoder.fc, net.decoder.alpha, net.decoder.beta, None, spec)

    @torch.no_grad()
    def forward_with_spikes(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.encoder(obs, 1)[0].double()
        drives = [self.hidden[0].current(x, integer_input=False)] * self.timesteps  # constant: once per decision
        all_spikes = []
        for layer in self.hidden:
            current = voltage = torch.zeros_like(drives[0])
            spikes = []
            for drive in drives:
                current, voltage = layer.step(current, voltage, drive)
                s = (voltage > layer.theta).double()
                voltage = voltage * (1.0 - s)
                spikes.append(s)
            all_spikes.append(torch.stack(spikes).float())
            following = self.hidden[len(all_spikes)] if len(all_spikes) < len(self.hidden) else self.readout
            drives = [following.current(s, integer_input=True) for s in spikes]
        current = voltage = torch.zeros_like(drives[0])
        for drive in drives:
            current, voltage = self.readout.step(current, voltage, drive)
        return (voltage * self.readout.scale).float(), all_spikes

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward_with_spikes(obs)[0]


def quantized_policy(policy: nn.Module, spec: QuantizationSpec) -> nn.Module:
    """A copy of `policy` whose network runs in fixed point (normalization and action mapping unchanged)."""
    import copy

    from spikerl.snn.network import SpikingMLP

    if not isinstance(policy.net, SpikingMLP):
        raise SpikerlError("fixed-point evaluation is for spiking networks; this run trained an ANN")
    quantized = copy.deepcopy(policy)
    quantized.net = QuantizedSpikingMLP(policy.net, spec)
    return quantized
