"""The no-grad in-place path (network.inference = fast) against the reference path."""

import copy

import pytest
import torch

from spikerl.config import NetworkConfig, NeuronConfig
from spikerl.snn.network import build_network

NEURONS = {
    "uniform": NeuronConfig(alpha=[0.0, 0.5], beta=0.5, theta=0.3),
    "randomized": NeuronConfig(alpha=[0.2, 0.5], beta=0.6, theta=0.3, randomize="normal", spread=0.3),
    "learnable": NeuronConfig(alpha=0.5, beta=[0.4, 0.8], theta=0.25, randomize="uniform", learnable=True),
    "subtract": NeuronConfig(alpha=[0.0, 0.5], beta=0.5, theta=0.3, reset="subtract"),
}


def twins(encoder: str, decoder: str, neuron: str, bias: bool = False, inference: str = "fast"):
    cfg = NetworkConfig(hidden=[24, 16], timesteps=5, encoder=encoder, decoder=decoder, population_size=3,
                        bias=bias, neuron=copy.deepcopy(NEURONS[neuron]), inference="reference")
    reference = build_network(cfg, 4, 3, torch.Generator().manual_seed(0))
    cfg.inference = inference
    fast = build_network(cfg, 4, 3, torch.Generator().manual_seed(0))
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("neuron", list(NEURONS))
@pytest.mark.parametrize("encoder, decoder", [("two_neuron", "membrane"), ("two_neuron", "integrator"),
                                              ("direct", "population"), ("population", "membrane"),
                                              ("poisson", "integrator")])
@pytest.mark.parametrize("inference", ["fast", "native"])
def test_fast_inference_is_identical_to_the_reference(encoder, decoder, neuron, inference):
    check_identical_to_the_reference(encoder, decoder, neuron, inference)


@pytest.mark.parametrize("encoder, decoder, neuron", [("two_neuron", "integrator", "learnable"),
                                                      ("direct", "population", "randomized")])
def test_compiled_inference_is_identical_to_the_reference(encoder, decoder, neuron):
    """torch.compile takes seconds per variant on a CPU: a cross-section of the fast path's cases."""
    check_identical_to_the_reference(encoder, decoder, neuron, "compiled")


def check_identical_to_the_reference(encoder, decoder, neuron, inference):
    reference, fast = twins(encoder, decoder, neuron, bias=True, inference=inference)
    obs = torch.randn(33, 4) * 1.5
    with torch.no_grad():
        torch.manual_seed(5)  # the Poisson encoder draws: the same draws on both paths
        out_r, spikes_r = reference.forward_with_spikes(obs)
        torch.manual_seed(5)
        out_f, spikes_f = fast.forward_with_spikes(obs)
    for layer, (a, b) in enumerate(zip(spikes_r, spikes_f)):
        assert 0 < a.mean() < 1, f"layer {layer} all or nothing: the comparison would be empty"
        assert torch.equal(a, b), layer
    assert torch.equal(out_r, out_f)


@pytest.mark.parametrize("inference", ["fast", "native", "compiled"])
def test_repeated_and_interleaved_batch_shapes_do_not_leak_state(inference):
    reference, fast = twins("two_neuron", "membrane", "randomized", inference=inference)
    one, many = torch.randn(1, 4), torch.randn(100, 4)
    with torch.no_grad():
        expected_one, expected_many = reference(one), reference(many)
        results = [fast(one), fast(many), fast(one), fast(many), fast(one)]
    assert all(torch.equal(r, expected_one) for r in results[::2])
    assert all(torch.equal(r, expected_many) for r in results[1::2])
    assert results[0] is not results[2]  # outputs are fresh tensors, not views of reused buffers


def test_gradients_still_flow_through_the_training_backend():
    _, fast = twins("two_neuron", "integrator", "learnable")
    out = fast(torch.randn(8, 4))
    assert out.grad_fn is not None
    out.sum().backward()
    assert fast.layers[0].weight.grad.abs().sum() > 0 and fast.membranes[1].beta_raw.grad is not None
