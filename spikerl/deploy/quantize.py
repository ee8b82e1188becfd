"""Fixed-point evaluation: what a trained spiking policy keeps on Loihi-like integer hardware.

The arithmetic (weights on a per-layer integer grid, decays on a 1/2^decay_bits grid, truncating,
saturating integer states) is the fixed-point backend's (`spikerl.snn.backends.fixed_point`). This
module builds the integer twin of a trained network from those parts and wraps a policy around it.
The first layer's input is the encoded observation, which is real-valued: it enters as an integer
current round(W_int x) computed once per decision. The readout's membrane is read out as
V_int * s_readout. The float network is left as it is.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from spikerl.errors import SpikerlError
from spikerl.snn.backends.fixed_point import (FixedPointBackend, IntegerLinear, QuantizationSpec, quantize_decay,
                                              quantize_threshold)
from spikerl.snn.layer import CubaLIF, LeakyReadout

__all__ = ["QuantizationSpec", "QuantizedSpikingMLP", "quantized_policy"]


def _integer_neurons(float_neurons: CubaLIF, scale: float, spec: QuantizationSpec, backend: FixedPointBackend) -> CubaLIF:
    neurons = CubaLIF(float_neurons.size, 0.0, 0.0, 1.0, reset="hard")
    membrane = neurons.membrane
    membrane.alpha_fixed = quantize_decay(float_neurons.membrane.alpha, spec)
    membrane.beta_fixed = quantize_decay(float_neurons.membrane.beta, spec)
    membrane.theta_fixed = quantize_threshold(float_neurons.membrane.theta, scale)
    neurons.set_backend(backend)
    return neurons


class QuantizedSpikingMLP(nn.Module):
    """Integer-state simulation of a SpikingMLP (two-neuron or direct input, membrane or integrator readout)."""

    def __init__(self, net: nn.Module, spec: QuantizationSpec):
        super().__init__()
        from spikerl.snn.decoders import MembraneDecoder

        unsupported = [part for part, supported in (
            (f"encoder {type(net.encoder).__name__}", net.encoder.constant),
            (f"decoder {type(net.decoder).__name__}", isinstance(net.decoder, MembraneDecoder)),
            ("reset " + ", ".join(sorted({n.reset for n in net.neurons} - {"hard"})),
             all(n.reset == "hard" for n in net.neurons))) if not supported]
        if unsupported:
            raise SpikerlError("fixed-point evaluation covers spiking networks with a constant input encoder "
                               "(two_neuron, direct), a membrane or integrator readout and hard reset; this one has "
                               + " and ".join(unsupported))
        backend = FixedPointBackend(spec.state_bits)
        self.spec, self.encoder, self.timesteps = spec, net.encoder, net.timesteps
        self.layers = nn.ModuleList(IntegerLinear(layer, spec) for layer in net.layers)
        self.neurons = nn.ModuleList(_integer_neurons(n, layer.scale, spec, backend)
                                     for n, layer in zip(net.neurons, self.layers))
        self.readout_fc = IntegerLinear(net.decoder.fc, spec)
        self.readout = LeakyReadout(quantize_decay(net.decoder.alpha, spec), quantize_decay(net.decoder.beta, spec),
                                    backend).double()

    @torch.no_grad()
    def forward_with_spikes(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.encoder(obs, 1)[0].double()
        all_spikes = []
        for i, (layer, neurons) in enumerate(zip(self.layers, self.neurons)):
            # The first layer's drive is the same at every step: computed once per decision.
            x = neurons(layer(x, integer_input=False), steps=self.timesteps) if i == 0 else neurons(layer(x))
            all_spikes.append(x.float())
        return (self.readout(self.readout_fc(x)) * self.readout_fc.scale).float(), all_spikes

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward_with_spikes(obs)[0]


def quantized_policy(policy: nn.Module, spec: QuantizationSpec) -> nn.Module:
    """A copy of `policy` whose network runs in fixed point (normalization and action mapping unchanged)."""
    from spikerl.snn.network import SpikingMLP

    if not isinstance(policy.net, SpikingMLP):
        raise SpikerlError("fixed-point evaluation is for spiking networks; this run trained an ANN")
    quantized = copy.deepcopy(policy)
    quantized.net = QuantizedSpikingMLP(policy.net, spec)
    return quantized
