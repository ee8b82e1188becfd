"""Networks built from a NetworkConfig: a spiking MLP and its ANN twin of the same sizes."""

from __future__ import annotations

import torch
from torch import nn

from spikerl.config import NetworkConfig
from spikerl.snn.decoders import MembraneDecoder, PopulationDecoder, snn_linear
from spikerl.snn.encoders import build_encoder
from spikerl.snn.layer import CubaLIF, LeakyReadout
from spikerl.snn.surrogate import SpikeFunction


def per_layer(value, n_layers: int) -> list[float]:
    return list(value) if isinstance(value, list) else [value] * n_layers


class SpikingMLP(nn.Module):
    """encoder -> [linear -> CubaLIF] x len(hidden) -> decoder, simulated for T steps from rest.

    `layers` are the linear maps, `neurons` the spiking layers after them; every spiking layer and
    readout runs on the network's backend: reference when built, `set_backend` switches all of them."""

    def __init__(self, cfg: NetworkConfig, in_dim: int, out_dim: int, generator: torch.Generator | None = None):
        super().__init__()
        n = cfg.neuron
        self.timesteps = cfg.timesteps
        spike_fn = SpikeFunction(n.surrogate, n.surrogate_slope, n.surrogate_width)
        self.encoder = build_encoder(cfg.encoder, in_dim, cfg.population_size, cfg.population_range,
                                     cfg.population_std, cfg.population_spikes)
        alphas, betas = per_layer(n.alpha, len(cfg.hidden)), per_layer(n.beta, len(cfg.hidden))
        thetas = per_layer(n.theta, len(cfg.hidden))
        sizes = [self.encoder.out_features, *cfg.hidden]

        def neurons(size: int, alpha: float, beta: float, theta: float) -> CubaLIF:
            return CubaLIF(size, alpha, beta, theta, randomize=n.randomize, spread=n.spread, learnable=n.learnable,
                           generator=generator, spike_fn=spike_fn, reset=n.reset, detach_reset=n.detach_reset)

        self.layers = nn.ModuleList(snn_linear(a, b, cfg.bias) for a, b in zip(sizes[:-1], sizes[1:]))
        self.neurons = nn.ModuleList(neurons(*p) for p in zip(cfg.hidden, alphas, betas, thetas))
        if cfg.decoder == "population":
            self.decoder = PopulationDecoder(cfg.hidden[-1], out_dim, cfg.population_size,
                                             neurons(out_dim * cfg.population_size, alphas[-1], betas[-1], thetas[-1]),
                                             cfg.bias)
        elif cfg.decoder == "integrator":
            self.decoder = MembraneDecoder(cfg.hidden[-1], out_dim, alpha=0.0, beta=1.0, bias=cfg.bias)
        else:
            alpha = alphas[-1] if cfg.readout_alpha is None else cfg.readout_alpha
            beta = betas[-1] if cfg.readout_beta is None else cfg.readout_beta
            self.decoder = MembraneDecoder(cfg.hidden[-1], out_dim, alpha, beta, cfg.bias)

    @property
    def backend(self) -> str:
        return self.neurons[0].backend.name

    def set_backend(self, name: str, device: torch.device | str = "cpu") -> None:
        """Run every spiking layer and readout on backend `name` (weights and parameters unchanged)."""
        for module in self.modules():
            if isinstance(module, (CubaLIF, LeakyReadout)):
                module.set_backend(name, device)

    def forward_with_spikes(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs [*batch, out] and the spikes [T, *batch, n] of every hidden layer."""
        x = self.encoder(obs, self.timesteps)
        hidden_spikes = []
        for i, (layer, neurons) in enumerate(zip(self.layers, self.neurons)):
            if i == 0 and self.encoder.constant:
                x = neurons(layer(x[0]), steps=self.timesteps)  # the same input every step: one product for all T
            else:
                x = neurons(layer(x))
            hidden_spikes.append(x)
        return self.decoder(x), hidden_spikes

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward_with_spikes(obs)[0]


class ANNMLP(nn.Module):
    """The ANN twin: the same input features and hidden sizes, ReLU (or tanh) units, a linear output."""

    backend = "none"

    def __init__(self, cfg: NetworkConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.encoder = build_encoder(cfg.encoder, in_dim)
        sizes = [self.encoder.out_features, *cfg.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh() if cfg.activation == "tanh" else nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], out_dim))
        self.body = nn.Sequential(*layers)

    def set_backend(self, name: str, device: torch.device | str = "cpu") -> None:
        """An ANN has no spiking layers: nothing to switch."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(self.encoder(obs, 1)[0])


def output_layer(net: nn.Module) -> nn.Linear:
    """The linear map that produces a network's outputs: the readout's (spiking) or the last layer (ANN)."""
    return net.body[-1] if isinstance(net, ANNMLP) else net.decoder.fc


def build_network(cfg: NetworkConfig, in_dim: int, out_dim: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> nn.Module:
    """The network `cfg` describes, on `device`, its spiking layers on `cfg.backend` (auto resolved for `device`)."""
    if cfg.kind == "ann":
        return ANNMLP(cfg, in_dim, out_dim).to(device)
    net = SpikingMLP(cfg, in_dim, out_dim, generator)  # built on the reference backend, which always runs
    net.set_backend(cfg.backend, device)
    return net.to(device)
