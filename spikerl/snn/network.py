"""Networks built from a NetworkConfig: a spiking MLP and its ANN twin of the same sizes."""

from __future__ import annotations

import torch
from torch import nn

from spikerl.config import NetworkConfig
from spikerl.snn.decoders import MembraneDecoder, PopulationDecoder, snn_linear, time_linear
from spikerl.snn.encoders import build_encoder
from spikerl.snn.fused import check_compiled_available, cuba_lif_multistep_compiled, cuba_lif_multistep_fused
from spikerl.snn.inference import StateBuffers, cuba_lif_multistep_inference, leaky_readout_inference
from spikerl.snn.membrane import MembraneParameters
from spikerl.snn.native import cuba_lif_multistep_native, leaky_readout_native, library
from spikerl.snn.neuron import cuba_lif_multistep
from spikerl.snn.surrogate import SpikeFunction


MULTISTEP_BACKENDS = {"reference": cuba_lif_multistep, "fused": cuba_lif_multistep_fused,
                      "native": cuba_lif_multistep_native, "compiled": cuba_lif_multistep_compiled}


def per_layer(value, n_layers: int) -> list[float]:
    return list(value) if isinstance(value, list) else [value] * n_layers


class SpikingMLP(nn.Module):
    """encoder -> [linear -> CUBA-LIF] x len(hidden) -> decoder, simulated for T steps from rest."""

    def __init__(self, cfg: NetworkConfig, in_dim: int, out_dim: int, generator: torch.Generator | None = None):
        super().__init__()
        n = cfg.neuron
        self.timesteps, self.reset, self.detach_reset = cfg.timesteps, n.reset, n.detach_reset
        self.backend, self.inference = cfg.backend, cfg.inference
        self.multistep = MULTISTEP_BACKENDS[cfg.backend]
        if "native" in (cfg.backend, cfg.inference):
            library()  # compile (or load) the kernel now: a missing compiler fails before any training
        if "compiled" in (cfg.backend, cfg.inference):
            check_compiled_available()
        self.state_buffers = StateBuffers()
        self.spike_fn = SpikeFunction(n.surrogate, n.surrogate_slope, n.surrogate_width)
        self.encoder = build_encoder(cfg.encoder, in_dim, cfg.population_size, cfg.population_range,
                                     cfg.population_std, cfg.population_spikes)
        alphas, betas = per_layer(n.alpha, len(cfg.hidden)), per_layer(n.beta, len(cfg.hidden))
        thetas = per_layer(n.theta, len(cfg.hidden))
        sizes = [self.encoder.out_features, *cfg.hidden]
        self.layers = nn.ModuleList(snn_linear(a, b, cfg.bias) for a, b in zip(sizes[:-1], sizes[1:]))
        self.membranes = nn.ModuleList(
            MembraneParameters(size, a, b, th, n.randomize, n.spread, n.learnable, generator)
            for size, a, b, th in zip(cfg.hidden, alphas, betas, thetas)
        )
        if cfg.decoder == "population":
            readout = MembraneParameters(out_dim * cfg.population_size, alphas[-1], betas[-1], thetas[-1],
                                         n.randomize, n.spread, n.learnable, generator)
            self.decoder = PopulationDecoder(cfg.hidden[-1], out_dim, cfg.population_size, readout,
                                             self.spike_fn, self.reset, self.detach_reset, cfg.bias, self.multistep)
        elif cfg.decoder == "integrator":
            self.decoder = MembraneDecoder(cfg.hidden[-1], out_dim, alpha=0.0, beta=1.0, bias=cfg.bias)
        else:
            alpha = alphas[-1] if cfg.readout_alpha is None else cfg.readout_alpha
            beta = betas[-1] if cfg.readout_beta is None else cfg.readout_beta
            self.decoder = MembraneDecoder(cfg.hidden[-1], out_dim, alpha, beta, cfg.bias)

    def _inference_multistep(self, current, params, spike_fn, reset, detach_reset):
        return cuba_lif_multistep_inference(current, params, reset, self.state_buffers)

    def _inference_readout(self, current, alpha, beta):
        return leaky_readout_inference(current, alpha, beta, self.state_buffers)

    def forward_with_spikes(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs [B, out] and the spikes [T, B, n] of every hidden layer."""
        # Updates use `backend`; passes without gradients use `inference` (reference: the backend too).
        if torch.is_grad_enabled() or self.inference == "reference":
            multistep = self.multistep
            readout = leaky_readout_native if self.backend == "native" else None
        elif self.inference == "native":
            multistep, readout = cuba_lif_multistep_native, leaky_readout_native
        elif self.inference == "compiled":
            multistep, readout = cuba_lif_multistep_compiled, None
        else:
            multistep, readout = self._inference_multistep, self._inference_readout
        x = self.encoder(obs, self.timesteps)
        hidden_spikes = []
        for i, (layer, membrane) in enumerate(zip(self.layers, self.membranes)):
            params = membrane.params()
            if i == 0 and self.encoder.constant:
                # The same input at every step: one product for all T steps, given once where the backend can take it.
                current = layer(x[0])
                if getattr(multistep, "takes_constant_input", False):
                    x = multistep(current, params, self.spike_fn, self.reset, self.detach_reset, steps=self.timesteps)
                else:
                    x = multistep(current.unsqueeze(0).expand(self.timesteps, -1, -1), params, self.spike_fn,
                                  self.reset, self.detach_reset)
            else:
                x = multistep(time_linear(layer, x), params, self.spike_fn, self.reset, self.detach_reset)
            hidden_spikes.append(x)
        return self.decoder(x, multistep=multistep, readout=readout,
                            summed_backward=self.backend != "reference"), hidden_spikes

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward_with_spikes(obs)[0]


class ANNMLP(nn.Module):
    """The ANN twin: the same input features and hidden sizes, ReLU units, a linear output."""

    def __init__(self, cfg: NetworkConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.encoder = build_encoder(cfg.encoder, in_dim)
        sizes = [self.encoder.out_features, *cfg.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], out_dim))
        self.body = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(self.encoder(obs, 1)[0])


def build_network(cfg: NetworkConfig, in_dim: int, out_dim: int, generator: torch.Generator | None = None) -> nn.Module:
    if cfg.kind == "ann":
        return ANNMLP(cfg, in_dim, out_dim)
    return SpikingMLP(cfg, in_dim, out_dim, generator)
