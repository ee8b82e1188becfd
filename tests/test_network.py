"""The spiking MLP and its ANN twin built from config."""

import copy

import pytest
import torch

from spikerl.config import NetworkConfig, NeuronConfig
from spikerl.snn.membrane import MembraneParameters
from spikerl.snn.network import ANNMLP, SpikingMLP, build_network


def make_cfg(**kw):
    neuron = kw.pop("neuron", NeuronConfig(alpha=[0.0, 0.5], beta=0.5, theta=0.3))
    return NetworkConfig(hidden=[16, 8], timesteps=4, neuron=neuron, **kw)


@pytest.mark.parametrize("encoder", ["two_neuron", "direct", "population", "poisson"])
@pytest.mark.parametrize("decoder", ["membrane", "integrator", "population"])
def test_every_encoder_decoder_pair_runs_and_trains(encoder, decoder):
    torch.manual_seed(0)
    net = build_network(make_cfg(encoder=encoder, decoder=decoder, population_size=4), 3, 2)
    out, spikes = net.forward_with_spikes(torch.randn(5, 3))
    assert out.shape == (5, 2)
    assert [s.shape for s in spikes] == [(4, 5, 16), (4, 5, 8)]
    out.sum().backward()
    assert net.layers[0].weight.grad is not None and net.layers[0].weight.grad.abs().sum() > 0


def test_constant_input_shortcut_equals_the_stepwise_path():
    torch.manual_seed(1)
    net = build_network(make_cfg(encoder="two_neuron"), 3, 2)
    obs = torch.randn(7, 3)
    out, spikes = net.forward_with_spikes(obs)
    # The same network with the encoder declared time-varying computes W x at every step.
    net.encoder = copy.copy(net.encoder)
    net.encoder.constant = False
    out2, spikes2 = net.forward_with_spikes(obs)
    assert all(torch.equal(a, b) for a, b in zip(spikes, spikes2))
    assert torch.allclose(out, out2)


def test_per_layer_membrane_values_reach_each_layer():
    net = build_network(make_cfg(neuron=NeuronConfig(alpha=[0.0, 0.5], beta=[0.9, 0.7], theta=[0.2, 1.1])), 3, 2)
    assert net.neurons[0].membrane.alpha.unique().tolist() == [0.0]
    assert net.neurons[1].membrane.alpha.unique().tolist() == [0.5]
    assert net.neurons[0].membrane.beta.unique().tolist() == pytest.approx([0.9])
    assert net.neurons[1].membrane.theta.unique().tolist() == pytest.approx([1.1])


def test_randomized_draw_is_per_neuron_clipped_and_seeded():
    gen = torch.Generator().manual_seed(0)
    m = MembraneParameters(20000, 0.5, 0.95, 2.0, randomize="normal", spread=0.1, generator=gen)
    assert m.alpha.mean().item() == pytest.approx(0.5, abs=0.005)
    assert m.alpha.std().item() == pytest.approx(0.05, abs=0.005)
    assert m.theta.std().item() == pytest.approx(0.2, abs=0.01)
    assert m.beta.max().item() <= 1.0 and (m.beta == 1.0).any()  # 0.95 + 0.095 z crosses 1: clipped
    again = MembraneParameters(20000, 0.5, 0.95, 2.0, randomize="normal", spread=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m.theta, again.theta)
    u = MembraneParameters(20000, 0.5, 0.5, 1.0, randomize="uniform", spread=0.2, generator=gen)
    assert u.alpha.min().item() >= 0.4 and u.alpha.max().item() <= 0.6
    assert u.alpha.std().item() == pytest.approx(0.2 / 3**0.5 * 0.5, abs=0.005)


def test_randomized_parameters_are_copied_into_target_networks():
    cfg = make_cfg(neuron=NeuronConfig(alpha=0.5, beta=0.5, theta=0.5, randomize="normal", spread=0.2))
    online = build_network(cfg, 3, 2, torch.Generator().manual_seed(5))
    other = build_network(cfg, 3, 2, torch.Generator().manual_seed(6))
    assert not torch.equal(online.neurons[0].membrane.theta, other.neurons[0].membrane.theta)
    other.load_state_dict(online.state_dict())  # a hard target update
    assert torch.equal(online.neurons[0].membrane.theta, other.neurons[0].membrane.theta)
    assert torch.equal(copy.deepcopy(online).neurons[1].membrane.alpha, online.neurons[1].membrane.alpha)


def test_learnable_parameters_train_and_stay_in_range():
    cfg = make_cfg(neuron=NeuronConfig(alpha=0.5, beta=0.5, theta=0.5, learnable=True))
    net = build_network(cfg, 3, 2)
    names = {n for n, _ in net.named_parameters()}
    assert {"neurons.0.membrane.alpha_raw", "neurons.1.membrane.theta_raw"} <= names
    opt = torch.optim.SGD(net.parameters(), lr=50.0)
    obs = torch.randn(32, 3)
    for _ in range(20):  # a huge step size pushes the raw values far; the mapped ones stay in range
        opt.zero_grad()
        loss = -net(obs).sum() - sum(m.alpha.sum() + m.beta.sum() - m.theta.sum() for m in (n.membrane for n in net.neurons))
        loss.backward()
        opt.step()
    for m in (n.membrane for n in net.neurons):
        assert 0.0 <= m.alpha.min().item() and m.alpha.max().item() <= 1.0
        assert 0.0 <= m.beta.min().item() and m.beta.max().item() <= 1.0
        assert m.theta.min().item() > 0.0
        assert not torch.allclose(m.alpha, torch.full_like(m.alpha, 0.5))


def test_ann_twin_has_the_same_sizes():
    cfg = make_cfg()
    snn = build_network(cfg, 3, 2)
    ann = build_network(NetworkConfig(kind="ann", hidden=cfg.hidden, encoder="two_neuron"), 3, 2)
    assert isinstance(snn, SpikingMLP) and isinstance(ann, ANNMLP)
    snn_shapes = [layer.weight.shape for layer in snn.layers] + [snn.decoder.fc.weight.shape]
    ann_shapes = [m.weight.shape for m in ann.body if isinstance(m, torch.nn.Linear)]
    assert snn_shapes == ann_shapes == [(16, 6), (8, 16), (2, 8)]


def test_snn_weights_use_dsrl_initialisation_and_no_bias():
    torch.manual_seed(0)
    net = build_network(NetworkConfig(hidden=[2000]), 400, 1)
    w = net.layers[0].weight
    assert net.layers[0].bias is None
    assert w.std().item() == pytest.approx((1 / 800) ** 0.5, rel=0.02)  # fan_in = 2 * 400 (two-neuron)
