"""The fast CUBA-LIF backends (fused autograd node, native C kernels, the fused node through
torch.compile) give the reference path's spikes exactly and its gradients to float tolerance."""

import itertools

import pytest
import torch

from spikerl.config import NetworkConfig, NeuronConfig
from spikerl.snn.fused import cuba_lif_multistep_compiled, cuba_lif_multistep_fused
from spikerl.snn.membrane import MembraneParameters
from spikerl.snn.native import cuba_lif_multistep_native
from spikerl.snn.network import build_network
from spikerl.snn.neuron import cuba_lif_multistep
from spikerl.snn.surrogate import SpikeFunction

CASES = list(itertools.product(["hard", "subtract"], [True, False], ["fast_sigmoid", "atan", "rectangular"],
                               ["uniform", "randomized", "learnable"]))
BACKENDS = {"fused": cuba_lif_multistep_fused, "native": cuba_lif_multistep_native,
            "compiled": cuba_lif_multistep_compiled}
# torch.compile takes seconds per variant on a CPU: the compiled backend runs a cross-section of the cases.
COMPILED_CASES = [("hard", True, "fast_sigmoid", "uniform"), ("subtract", False, "atan", "learnable"),
                  ("hard", False, "rectangular", "randomized")]
BACKEND_CASES = [(b, *case) for b in ("fused", "native") for case in CASES] + [("compiled", *c) for c in COMPILED_CASES]


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


@pytest.mark.parametrize("backend, reset, detach, surrogate, kind", BACKEND_CASES)
def test_fast_backends_equal_reference(reset, detach, surrogate, kind, backend):
    torch.manual_seed(0)
    currents = torch.randn(6, 5, 7) * 0.6 + 0.2
    m = membrane(kind, 7)
    spike_fn = SpikeFunction(surrogate, slope=5.0 if surrogate != "rectangular" else None, width=1.0)
    ref_spikes, ref_grads = run(cuba_lif_multistep, currents, m, spike_fn, reset, detach)
    fused_spikes, fused_grads = run(BACKENDS[backend], currents, m, spike_fn, reset, detach)
    assert 0 < ref_spikes.mean() < 1  # some neurons spike, some don't: the comparison means something
    assert torch.equal(ref_spikes, fused_spikes)
    assert ref_grads.keys() == fused_grads.keys()
    for name in ref_grads:
        assert torch.allclose(ref_grads[name], fused_grads[name], atol=1e-5, rtol=1e-4), name
    if kind == "learnable":
        assert {"alpha_raw", "beta_raw", "theta_raw"} <= ref_grads.keys()


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_fast_backends_without_gradients_match_and_record_nothing(backend):
    currents = torch.randn(4, 3, 5)
    m = membrane("randomized", 5)
    spike_fn = SpikeFunction()
    with torch.no_grad():
        out = BACKENDS[backend](currents, m.params(), spike_fn)
    assert out.grad_fn is None
    assert torch.equal(out, cuba_lif_multistep(currents, m.params(), spike_fn))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("kind", ["uniform", "learnable"])
def test_constant_input_is_given_once_and_its_gradient_summed_over_steps(kind, backend):
    """The first layer's encoded observation is one [B, n] current for all T steps: never copied T times."""
    torch.manual_seed(0)
    m, spike_fn = membrane(kind, 7), SpikeFunction("fast_sigmoid", slope=5.0)
    constant = (torch.randn(5, 7) * 0.6 + 0.3).requires_grad_(True)
    ref = cuba_lif_multistep(constant.unsqueeze(0).expand(6, -1, -1), m.params(), spike_fn)
    ref_grads = torch.autograd.grad((ref * torch.linspace(-1, 2, ref.numel()).reshape(ref.shape)).sum(),
                                    [constant, *m.parameters()])
    out = BACKENDS[backend](constant, m.params(), spike_fn, steps=6)
    grads = torch.autograd.grad((out * torch.linspace(-1, 2, out.numel()).reshape(out.shape)).sum(),
                                [constant, *m.parameters()])
    assert 0 < ref.mean() < 1 and torch.equal(ref, out)
    for a, b in zip(ref_grads, grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_native_wide_layers_over_threads_match_reference():
    """Rows shared among threads, and scratch rows too wide for the stack (taken from the heap)."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    m, spike_fn = membrane("learnable", 6000), SpikeFunction("atan", slope=2.0)
    currents = torch.randn(4, 20, 6000) * 0.6 + 0.2
    ref_spikes, ref_grads = run(cuba_lif_multistep, currents, m, spike_fn, "subtract", False)
    spikes, grads = run(cuba_lif_multistep_native, currents, m, spike_fn, "subtract", False)
    assert torch.equal(ref_spikes, spikes)
    for name in ref_grads:
        assert torch.allclose(ref_grads[name], grads[name], atol=1e-5, rtol=1e-4), name


def test_native_keeps_only_its_input_for_the_backward():
    """The states are recomputed in the backward: a constant input keeps one [B, n] row, not T of them."""
    m, spike_fn = membrane("randomized", 7), SpikeFunction()
    constant = torch.randn(5, 7).requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        cuba_lif_multistep_native(constant, m.params(), spike_fn, steps=6)
    assert max(t.numel() for t in saved) == 5 * 7


def test_native_backend_refuses_what_it_cannot_run():
    from spikerl.errors import SpikerlError

    m = membrane("uniform", 3)
    with pytest.raises(SpikerlError, match="float32 on the CPU"):
        cuba_lif_multistep_native(torch.randn(2, 2, 3, dtype=torch.float64), m.params(), SpikeFunction())


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("decoder", ["membrane", "integrator", "population"])
def test_networks_agree_across_backends(decoder, backend):
    cfg = NetworkConfig(hidden=[32, 16], timesteps=5, decoder=decoder, population_size=3,
                        neuron=NeuronConfig(alpha=[0.0, 0.5], beta=0.5, theta=0.3, randomize="normal", learnable=True))
    torch.manual_seed(0)
    reference = build_network(cfg, 4, 2, torch.Generator().manual_seed(0))
    cfg.backend = backend
    fused = build_network(cfg, 4, 2, torch.Generator().manual_seed(0))
    fused.load_state_dict(reference.state_dict())
    obs = torch.randn(9, 4)
    out_r, spikes_r = reference.forward_with_spikes(obs)
    out_f, spikes_f = fused.forward_with_spikes(obs)
    assert all(torch.equal(a, b) for a, b in zip(spikes_r, spikes_f))
    assert torch.allclose(out_r, out_f, atol=1e-6)
    if decoder == "integrator":  # the fast backends take the integrator's gradients through the spike counts
        assert type(out_f.grad_fn).__name__ == "_IntegratorReadoutBackward"
    out_r.square().sum().backward()
    out_f.square().sum().backward()
    for (name, p_r), (_, p_f) in zip(reference.named_parameters(), fused.named_parameters()):
        assert torch.allclose(p_r.grad, p_f.grad, atol=1e-5, rtol=1e-4), name


def test_native_backend_without_a_c_compiler_is_one_clear_error(monkeypatch):
    from spikerl.errors import SpikerlError
    from spikerl.snn import native

    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    cfg = NetworkConfig(hidden=[8], backend="native")
    with pytest.raises(SpikerlError, match="found no C compiler"):
        build_network(cfg, 4, 2)


def test_compiled_backend_without_a_cpp_compiler_is_one_clear_error(monkeypatch):
    import shutil

    from spikerl.errors import SpikerlError

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SpikerlError, match="needs a C\\+\\+ compiler"):
        build_network(NetworkConfig(hidden=[8], backend="compiled"), 4, 2)


def test_a_torch_compile_failure_is_one_clear_error():
    import torch._dynamo.exc

    from spikerl.errors import SpikerlError
    from spikerl.snn.fused import _compile_errors

    def fails(*args):
        raise torch._dynamo.exc.TorchRuntimeError("the compiler's own message\nlast line: boom")

    with pytest.raises(SpikerlError, match="torch.compile failed \\(last line: boom\\); choose fused"):
        _compile_errors(fails)(1)
    with pytest.raises(ValueError):  # anything else is not the compiler's and passes through unchanged
        _compile_errors(lambda: int("x"))()
