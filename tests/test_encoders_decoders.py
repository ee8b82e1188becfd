"""Encoders and decoders (docs/design.md, section 4) against worked values."""

import pytest
import torch

from spikerl.config import NetworkConfig
from spikerl.snn.decoders import MembraneDecoder, PopulationDecoder
from spikerl.snn.encoders import (DirectEncoder, PoissonEncoder, PopulationEncoder, RunningMaxAbs,
                                  TwoNeuronEncoder, build_encoder)
from spikerl.snn.layer import CubaLIF


def test_two_neuron_splits_sign_and_repeats_over_time():
    enc = TwoNeuronEncoder(3)
    out = enc(torch.tensor([[1.5, -2.0, 0.0]]), timesteps=4)
    assert out.shape == (4, 1, 6)
    for t in range(4):
        assert out[t, 0].tolist() == [1.5, 0.0, 0.0, 0.0, 2.0, 0.0]
    assert enc.constant and enc.out_features == 6


def test_direct_encoder_is_a_constant_current():
    out = DirectEncoder(2)(torch.tensor([[0.3, -0.4]]), timesteps=3)
    assert out.shape == (3, 1, 2) and torch.equal(out[2], torch.tensor([[0.3, -0.4]]))


def test_running_max_abs_normalizes_into_unit_range():
    norm = RunningMaxAbs(2)
    norm.update(torch.tensor([2.0, -1.0]))
    norm.update(torch.tensor([-4.0, 0.5]))
    assert norm.max_abs.tolist() == [4.0, 1.0]
    assert norm(torch.tensor([[2.0, -0.5]])).tolist() == [[0.5, -0.5]]
    off = RunningMaxAbs(2, enabled=False)
    off.update(torch.tensor([9.0, 9.0]))
    assert off(torch.tensor([[2.0, -0.5]])).tolist() == [[2.0, -0.5]]


def test_the_mean_std_normalizer_clips_where_the_config_says():
    from spikerl.config import load_config
    from spikerl.snn.encoders import observation_normalizer

    far = torch.tensor([[50.0, -50.0, 0.5]])
    for clip in (10.0, 3.0):
        cfg = load_config(None, ["network.normalize_obs=true", "network.obs_normalizer=mean_std", f"network.obs_clip={clip}"])
        norm = observation_normalizer(cfg.network, 3)  # mean 0, variance 1 before any update
        assert norm(far)[0].tolist() == pytest.approx([clip, -clip, 0.5])


def test_population_activation_is_gaussian_receptive_fields():
    enc = PopulationEncoder(1, population_size=3, mean_range=(-1.0, 1.0), std=0.5)
    act = enc.activation(torch.tensor([[0.0]]))
    # means -1, 0, 1; a = exp(-(0 - mu)^2 / (2 * 0.25))
    expected = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / 0.5)
    assert torch.allclose(act[0], expected)


def test_population_deterministic_spikes_are_regular_and_train_the_fields():
    enc = PopulationEncoder(2, population_size=4, mean_range=(-1.0, 1.0), std=0.5, spikes="deterministic")
    obs = torch.tensor([[0.2, -0.7]])
    spikes = enc(obs, timesteps=20)
    assert spikes.shape == (20, 1, 8)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    # An integrate-and-fire neuron driven by a fires about a * T times.
    rate = spikes.mean(dim=0)
    assert torch.allclose(rate, enc.activation(obs), atol=1.0 / 20 + 1e-6)
    spikes.sum().backward()
    assert enc.mean.grad.abs().sum() > 0 and enc.std.grad.abs().sum() > 0


def test_the_default_population_leaves_no_value_in_its_range_without_spikes():
    # PopSAN's fields (10 over [-3, 3], std sqrt(0.15)) overlap: at T = 5 every value drives one of them to spike.
    # With std 0.15 a fifth of the range, between two means, made no spike at all.
    cfg = NetworkConfig(encoder="population")
    enc = build_encoder(cfg.encoder, 1, cfg.population_size, cfg.population_range, cfg.population_std)
    obs = torch.linspace(-3.0, 3.0, 6001).unsqueeze(-1)
    spikes_per_value = enc(obs, 5).sum(dim=(0, 2))
    assert spikes_per_value.min() >= 1


def test_population_poisson_spikes_have_the_activation_as_rate():
    torch.manual_seed(0)
    enc = PopulationEncoder(1, population_size=3, mean_range=(-1.0, 1.0), std=0.8, spikes="poisson")
    obs = torch.tensor([[0.1]])
    rate = enc(obs, timesteps=4000).mean(dim=0)
    assert torch.allclose(rate, enc.activation(obs).detach(), atol=0.03)
    enc(obs, timesteps=5).sum().backward()
    assert enc.mean.grad.abs().sum() > 0


def test_poisson_encoder_rates_follow_the_two_neuron_split():
    torch.manual_seed(0)
    out = PoissonEncoder(2)(torch.tensor([[0.25, -0.75]]), timesteps=4000)
    assert out.shape == (4000, 1, 4)
    assert out.mean(dim=0)[0].tolist() == pytest.approx([0.25, 0.0, 0.0, 0.75], abs=0.03)


def test_membrane_decoder_returns_last_step_voltage():
    dec = MembraneDecoder(2, 1, alpha=0.5, beta=0.5)
    with torch.no_grad():
        dec.fc.weight.copy_(torch.tensor([[1.0, 2.0]]))
    spikes = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]])  # W s = 1, 2, 0
    # I: 1, 2.5, 1.25   V: 1, 3.0, 2.75
    assert dec(spikes).item() == pytest.approx(2.75)


def test_integrator_decoder_sums_weighted_spikes():
    dec = MembraneDecoder(3, 2, alpha=0.0, beta=1.0)
    spikes = (torch.rand(5, 4, 3) > 0.5).float()
    assert torch.allclose(dec(spikes), dec.fc(spikes.sum(dim=0)), atol=1e-6)


@pytest.mark.parametrize("bias", [False, True])
def test_integrator_backward_through_spike_counts_equals_autograd_through_the_steps(bias):
    """The integrator's summed backward (every step's spikes get g W, dW = g^T sum_t s) against autograd
    through the plain step-by-step readout, with two leading batch dimensions."""
    from spikerl.snn.backends.reference import leaky_readout

    torch.manual_seed(0)
    dec = MembraneDecoder(6, 3, alpha=0.0, beta=1.0, bias=bias)
    if bias:
        torch.nn.init.normal_(dec.fc.bias)
    spikes = (torch.rand(5, 2, 4, 6) > 0.5).float()
    weights = torch.randn(2, 4, 3)
    a, b = spikes.clone().requires_grad_(True), spikes.clone().requires_grad_(True)
    out = dec(a)
    assert type(out.grad_fn).__name__ == "IntegratorReadoutBackward"
    (out * weights).sum().backward()
    grads = [p.grad.clone() for p in dec.parameters()]
    dec.zero_grad()
    expected = leaky_readout(dec.fc(b), dec.alpha, dec.beta)
    (expected * weights).sum().backward()
    assert torch.equal(out, expected.detach())
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    for g, p in zip(grads, dec.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-5)


def test_population_decoder_reads_out_rates_per_dimension():
    neurons = CubaLIF(2 * 3, 0.0, 0.0, 0.5)  # no memory: a neuron spikes when W s > 0.5
    dec = PopulationDecoder(1, 2, 3, neurons)
    with torch.no_grad():
        dec.fc.weight.copy_(torch.tensor([[1.0], [1.0], [0.0], [0.0], [1.0], [1.0]]))
        dec.readout_weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]))
        dec.readout_bias.copy_(torch.tensor([0.5, -1.0]))
    spikes = torch.tensor([[[1.0]], [[0.0]], [[1.0]], [[1.0]]])  # input on 3 of 4 steps
    # Rates: dim 0 -> (0.75, 0.75, 0), dim 1 -> (0, 0.75, 0.75)
    assert dec(spikes)[0].tolist() == pytest.approx([0.75 * 1 + 0.75 * 2 + 0.5, 0.75 * 2 - 1.0])
