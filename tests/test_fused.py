"""The fused CUBA-LIF path gives the reference path's spikes exactly and its gradients to float tolerance."""

import itertools

import pytest
import torch

from spikerl.config import NetworkConfig, NeuronConfig
from spikerl.snn.fused import cuba_lif_multistep_fused
from spikerl.snn.membrane import MembraneParameters
from spikerl.snn.network import build_network
from spikerl.snn.neuron import cuba_lif_multistep
from spikerl.snn.surrogate import SpikeFunction

CASES = list(itertools.product(["hard", "subtract"], [True, False], ["fast_sigmoid", "atan", "rectangular"],
                               ["uniform", "randomized", "learnable"]))


def membrane(kind, size):
    gen = torch.Generator().manual_seed(1)
    if kind == "uniform":
        return MembraneParameters(size, 0.6, 0.7, 0.5)
    if kind == "randomized":
        return MembraneParameters(size, 0.6, 0.7, 0.5, randomize="normal", spread=0.3, generator=gen)
    return MembraneParameters(size, 0.6, 0.7, 0.5, randomize="uniform", spread=0.3, learnable=True, generator=gen)


def run(multistep, currents, m, spike_fn, reset, detach):
    currents = currents.clone().requires_grad_(True)
    spikes = multistep(currents, m.params(), spike_fn, reset, detach)
    # A loss that weighs every step and neuron differently, so every gradient path is exercised.
    weights = torch.linspace(-1.0, 2.0, spikes.numel()).reshape(spikes.shape)
    (spikes * weights).sum().backward()
    grads = {"currents": currents.grad.clone()}
    for name, p in m.named_parameters():
        grads[name] = p.grad.clone()
        p.grad = None
    return spikes.detach(), grads


@pytest.mark.parametrize("reset, detach, surrogate, kind", CASES)
def test_fused_equals_reference(reset, detach, surrogate, kind):
    torch.manual_seed(0)
    currents = torch.randn(6, 5, 7) * 0.6 + 0.2
    m = membrane(kind, 7)
    spike_fn = SpikeFunction(surrogate, slope=5.0 if surrogate != "rectangular" else None, width=1.0)
    ref_spikes, ref_grads = run(cuba_lif_multistep, currents, m, spike_fn, reset, detach)
    fused_spikes, fused_grads = run(cuba_lif_multistep_fused, currents, m, spike_fn, reset, detach)
    assert 0 < ref_spikes.mean() < 1  # some neurons spike, some don't: the comparison means something
    assert torch.equal(ref_spikes, fused_spikes)
    assert ref_grads.keys() == fused_grads.keys()
    for name in ref_grads:
        assert torch.allclose(ref_grads[name], fused_grads[name], atol=1e-5, rtol=1e-4), name
    if kind == "learnable":
        assert {"alpha_raw", "beta_raw", "theta_raw"} <= ref_grads.keys()


def test_fused_without_gradients_matches_and_records_nothing():
    currents = torch.randn(4, 3, 5)
    m = membrane("randomized", 5)
    spike_fn = SpikeFunction()
    with torch.no_grad():
        out = cuba_lif_multistep_fused(currents, m.params(), spike_fn)
    assert out.grad_fn is None
    assert torch.equal(out, cuba_lif_multistep(currents, m.params(), spike_fn))


@pytest.mark.parametrize("decoder", ["membrane", "integrator", "population"])
def test_networks_agree_across_backends(decoder):
    cfg = NetworkConfig(hidden=[32, 16], timesteps=5, decoder=decoder, population_size=3,
                        neuron=NeuronConfig(alpha=[0.0, 0.5], beta=0.5, theta=0.3, randomize="normal", learnable=True))
    torch.manual_seed(0)
    reference = build_network(cfg, 4, 2, torch.Generator().manual_seed(0))
    cfg.backend = "fused"
    fused = build_network(cfg, 4, 2, torch.Generator().manual_seed(0))
    fused.load_state_dict(reference.state_dict())
    obs = torch.randn(9, 4)
    out_r, spikes_r = reference.forward_with_spikes(obs)
    out_f, spikes_f = fused.forward_with_spikes(obs)
    assert all(torch.equal(a, b) for a, b in zip(spikes_r, spikes_f))
    assert torch.allclose(out_r, out_f, atol=1e-6)
    out_r.square().sum().backward()
    out_f.square().sum().backward()
    for (name, p_r), (_, p_f) in zip(reference.named_parameters(), fused.named_parameters()):
        assert torch.allclose(p_r.grad, p_f.grad, atol=1e-5, rtol=1e-4), name
