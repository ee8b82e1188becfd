"""The fixed-point backend: a trained network's CUBA-LIF layers in Loihi-like integer arithmetic.

Per layer l (hidden layers and the readout), with weight scale s_l = max|W_l| / (2^(weight_bits-1) - 1):

    W_int = round(W / s_l)         b_int = round(b / s_l)         theta_int = max(1, round(theta / s_l))
    alpha_q = round(alpha 2^decay_bits) / 2^decay_bits             (Loihi: 12 bits, decays as x/4096)
    I[t] = trunc(alpha_q I[t-1]) + W_int s[t] + b_int              (integers, truncated toward zero)
    V[t] = trunc(beta_q V[t-1]) + I[t];  spike when V[t] > theta_int, then V[t] = 0
    I, V saturate at +-(2^(state_bits-1) - 1)

`FixedPointBackend` is the recurrence (the last three lines) over float64 tensors holding integers;
`IntegerLinear` the quantized weights; `quantize_decay` and `quantize_threshold` the decays and threshold. It has no
gradients: it evaluates trained networks (`spikerl.deploy.quantize` builds one from a float network).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from spikerl.errors import SpikerlError
from spikerl.snn.backends import Backend
from spikerl.snn.backends.reference import as_steps


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


class IntegerLinear(nn.Module):
    """A linear layer's weights and bias as integers on the layer's own scale (float64 tensors)."""

    def __init__(self, layer: nn.Linear, spec: QuantizationSpec):
        super().__init__()
        weight = layer.weight.detach().double()
        self.scale = float(weight.abs().max().clamp(min=1e-12)) / (2 ** (spec.weight_bits - 1) - 1)
        self.register_buffer("weight", torch.round(weight / self.scale))
        bias = None if layer.bias is None else torch.round(layer.bias.detach().double() / self.scale)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor, integer_input: bool = True) -> torch.Tensor:
        """W_int x (+ b_int). A real-valued input (the encoded observation) is rounded after the product:
        on Loihi, a bias current the host writes once per decision."""
        out = x @ self.weight.T
        if not integer_input:
            out = torch.round(out)
        return out if self.bias is None else out + self.bias


def quantize_decay(value: torch.Tensor, spec: QuantizationSpec) -> torch.Tensor:
    grid = 2.0**spec.decay_bits
    return torch.round(torch.as_tensor(value).detach().double() * grid) / grid


def quantize_threshold(theta: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.round(theta.detach().double() / scale).clamp(min=1.0)


class FixedPointBackend(Backend):
    name = "fixed_point"
    dtypes = (torch.float64,)
    gradients = False
    learnable = False

    def __init__(self, state_bits: int = 24):
        self.limit = 2.0 ** (state_bits - 1) - 1

    def _step(self, state: torch.Tensor, decay: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
        return (torch.trunc(decay * state) + drive).clamp(-self.limit, self.limit)

    @torch.no_grad()
    def multistep_no_grad(self, currents, params, reset, steps):
        if reset != "hard":
            raise SpikerlError("the fixed-point model resets to zero (reset=hard) only")
        currents = as_steps(currents, steps)
        current = voltage = torch.zeros_like(currents[0])
        spikes = []
        for t in range(currents.shape[0]):
            current = self._step(current, params.alpha, currents[t])
            voltage = self._step(voltage, params.beta, current)
            s = (voltage > params.theta).to(voltage.dtype)
            voltage = voltage * (1.0 - s)
            spikes.append(s)
        return torch.stack(spikes)

    @torch.no_grad()
    def readout(self, currents, alpha, beta):
        current = voltage = torch.zeros_like(currents[0])
        for t in range(currents.shape[0]):
            current = self._step(current, alpha, currents[t])
            voltage = self._step(voltage, beta, current)
        return voltage
