"""Every backend, listed through the backend interface, against the reference backend: identical spikes,
gradients to float tolerance, with and without gradients, constant inputs, two leading batch dimensions
with per-row parameters, and readouts; then whole networks on every backend."""

import copy
import itertools

import pytest
import torch

from spikerl.config import NetworkConfig, NeuronConfig
from spikerl.errors import SpikerlError
from spikerl.snn.backends import backend_names, get_backend, resolve_backend
from spikerl.snn.layer import CubaLIF, LeakyReadout
from spikerl.snn.network import build_network
from spikerl.snn.surrogate import SpikeFunction

TRAINING = [name for name in backend_names() if get_backend(name).gradients]
FAST = [name for name in TRAINING if name != "reference"]
CASES = list(itertools.product(["hard", "subtract"], [True, False], ["fast_sigmoid", "atan", "rectangular"],
                               ["uniform", "randomized", "learnable"]))
# torch.compile takes seconds per variant on a CPU: the compiled backend runs a cross-section of the cases.
COMPILED_CASES = [("hard", True, "fast_sigmoid", "uniform"), ("subtract", False, "atan", "learnable"),
                  ("hard", False, "rectangular", "randomized")]
BACKEND_CASES = [(b, *case) for b in FAST if b != "compiled" for case in CASES] + \
                [("compiled", *case) for case in COMPILED_CASES]


def test_the_registry_lists_every_backend_and_what_it_supports():
    import typing

    from spikerl.snn.backends import TRAINING_BACKENDS

    assert set(backend_names()) == {"reference", "fused", "compiled", "native", "fixed_point"}
    assert set(TRAINING) == set(TRAINING_BACKENDS) == {"reference", "fused", "compiled", "native"}
    # What a config may name: auto and every backend that trains.
    assert typing.get_args(typing.get_type_hints(NetworkConfig)["backend"]) == ("auto", *TRAINING_BACKENDS)
    native = get_backend("native")
    assert native.devices == ("cpu",) and native.dtypes == (torch.float32,) and native.learnable
    assert not get_backend("fixed_point").gradients and not get_backend("fixed_point").learnable


def layer(backend, kind, shape=(7,), size=7, reset="hard", detach=True, spike_fn=None):
    gen = torch.Generator().manual_seed(1)
    randomize = {"uniform": "none", "randomized": "normal", "learnable": "uniform"}[kind]
    return CubaLIF(size, 0.6, 0.7, 0.5, randomize=randomize, spread=0.3, learnable=kind == "learnable", generator=gen,
                   spike_fn=spike_fn or SpikeFunction("fast_sigmoid", 5.0), reset=reset, detach_reset=detach,
                   backend=backend, shape=shape)


def run(neurons, currents, steps=None):
    """Spikes and the gradients of a loss that weighs every step and neuron differently."""
    currents = currents.clone().requires_grad_(True)
    spikes = neurons(currents, steps=steps)
    weights = torch.linspace(-1.0, 2.0, spikes.numel()).reshape(spikes.shape)
    (spikes * weights).sum().backward()
    grads = {"currents": currents.grad.clone()}
    for name, p in neurons.named_parameters():
        grads[name] = p.grad.clone()
        p.grad = None
    return spikes.detach(), grads


def assert_same(ref, other):
    (ref_spikes, ref_grads), (spikes, grads) = ref, other
    assert 0 < ref_spikes.mean() < 1  # some neurons spike, some don't: the comparison means something
    assert torch.equal(ref_spikes, spikes)
    assert ref_grads.keys() == grads.keys()
    for name in ref_grads:
        assert torch.allclose(ref_grads[name], grads[name], atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("backend, reset, detach, surrogate, kind", BACKEND_CASES)
def test_every_backend_equals_the_reference(backend, reset, detach, surrogate, kind):
    torch.manual_seed(0)
    currents = torch.randn(6, 5, 7) * 0.6 + 0.2
    spike_fn = SpikeFunction(surrogate, slope=5.0 if surrogate != "rectangular" else None, width=1.0)
    ref = run(layer("reference", kind, reset=reset, detach=detach, spike_fn=spike_fn), currents)
    assert_same(ref, run(layer(backend, kind, reset=reset, detach=detach, spike_fn=spike_fn), currents))
    if kind == "learnable":
        assert {"membrane.alpha_raw", "membrane.beta_raw", "membrane.theta_raw"} <= ref[1].keys()


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", ["randomized", "learnable"])
def test_two_leading_batch_dimensions_with_per_row_parameters(backend, kind):
    """[T, 3, 5, n] inputs with parameters [3, 1, n]: three stacked agents of five rows, each its own neurons."""
    torch.manual_seed(0)
    currents = torch.randn(6, 3, 5, 7) * 0.6 + 0.2
    ref = run(layer("reference", kind, shape=(3, 1, 7)), currents)
    assert_same(ref, run(layer(backend, kind, shape=(3, 1, 7)), currents))
    # Each agent's rows follow its own parameters: agent 1 alone, as a layer of its own, gives its spikes.
    single = layer("reference", kind, shape=(3, 1, 7))
    alone = CubaLIF(7, 0.6, 0.7, 0.5, spike_fn=single.spike_fn, backend=backend)
    alone.membrane = copy.deepcopy(single.membrane)
    for name in ("alpha", "beta", "theta"):
        raw = f"{name}_raw" if single.membrane.learnable else f"{name}_fixed"
        setattr(alone.membrane, raw, torch.nn.Parameter(getattr(single.membrane, raw)[1, 0].detach().clone())
                if single.membrane.learnable else getattr(single.membrane, raw)[1, 0].clone())
    with torch.no_grad():
        assert torch.equal(alone(currents[:, 1]), ref[0][:, 1])
        assert torch.equal(layer(backend, kind, shape=(3, 1, 7))(currents), ref[0])


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", ["uniform", "learnable"])
@pytest.mark.parametrize("shape", [(7,), (3, 1, 7)])
def test_a_constant_input_is_given_once_and_its_gradient_summed_over_steps(backend, kind, shape):
    """The first layer's encoded observation is one current [*batch, n] for all T steps: never copied T times."""
    torch.manual_seed(0)
    constant = torch.randn(3, 5, 7) * 0.6 + 0.3
    ref = run(layer("reference", kind, shape=shape), constant, steps=6)
    assert ref[0].shape == (6, 3, 5, 7)
    assert_same(ref, run(layer(backend, kind, shape=shape), constant, steps=6))


@pytest.mark.parametrize("backend", TRAINING)
def test_without_gradients_every_backend_matches_and_records_nothing(backend):
    torch.manual_seed(0)
    currents = torch.randn(4, 2, 3, 5) + 0.3
    expected = run(layer("reference", "randomized", size=5, shape=(2, 1, 5)), currents)[0]
    neurons = layer(backend, "learnable" if backend != "reference" else "randomized", size=5, shape=(2, 1, 5))
    with torch.no_grad():
        out = layer(backend, "randomized", size=5, shape=(2, 1, 5))(currents)
        assert neurons(currents).grad_fn is None
    assert out.grad_fn is None and torch.equal(out, expected)


@pytest.mark.parametrize("backend", TRAINING)
@pytest.mark.parametrize("alpha, beta", [(0.0, 1.0), (0.3, 0.8)])
@pytest.mark.parametrize("shape", [(4,), (2, 1, 4)])
def test_readouts_equal_the_reference(backend, alpha, beta, shape):
    torch.manual_seed(0)
    currents = torch.randn(5, 2, 3, 4)
    alphas, betas = torch.full(shape, alpha), torch.linspace(beta - 0.1 * (beta < 1), beta, 4).expand(shape).clone()
    reference, other = LeakyReadout(alphas, betas, "reference"), LeakyReadout(alphas, betas, backend)
    x_ref, x = currents.clone().requires_grad_(True), currents.clone().requires_grad_(True)
    out_ref, out = reference(x_ref), other(x)
    assert torch.allclose(out_ref, out, atol=1e-6) and out.shape == (2, 3, 4)
    (out_ref * torch.arange(24.0).reshape(2, 3, 4)).sum().backward()
    (out * torch.arange(24.0).reshape(2, 3, 4)).sum().backward()
    assert torch.allclose(x_ref.grad, x.grad, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(reference(currents), other(currents))


def test_the_fixed_point_backend_agrees_where_integers_stay_exact():
    """Integer currents, no current memory and an integrating membrane: truncation changes nothing, so the
    integer model's spikes are the reference's; with gradients it refuses to run."""
    torch.manual_seed(0)
    currents = torch.randint(-3, 4, (6, 5, 7)).double()
    reference = CubaLIF(7, 0.0, 1.0, 2.0)
    integer = CubaLIF(7, 0.0, 1.0, 2.0, backend="fixed_point")
    reference.double(), integer.double()
    with torch.no_grad():
        expected = reference(currents)
        assert 0 < expected.mean() < 1 and torch.equal(integer(currents), expected)
    with pytest.raises(SpikerlError, match="'fixed_point' has no forward pass with gradients"):
        integer(currents.requires_grad_(True))
    with pytest.raises(SpikerlError, match="cannot learn membrane parameters"):
        CubaLIF(7, 0.5, 0.5, 1.0, learnable=True, backend="fixed_point")


def test_native_wide_layers_over_threads_match_the_reference():
    """Rows shared among threads, and scratch rows too wide for the stack (taken from the heap)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        currents = torch.randn(4, 20, 6000) * 0.6 + 0.2
        spike_fn = SpikeFunction("atan", slope=2.0)
        ref = run(layer("reference", "learnable", shape=(6000,), size=6000, reset="subtract", detach=False,
                        spike_fn=spike_fn), currents)
        assert_same(ref, run(layer("native", "learnable", shape=(6000,), size=6000, reset="subtract", detach=False,
                                   spike_fn=spike_fn), currents))
    finally:
        torch.set_num_threads(threads)


def test_native_keeps_only_its_input_for_the_backward():
    """The states are recomputed in the backward: a constant input keeps one [B, n] row, not T of them."""
    neurons = layer("native", "randomized")
    constant = torch.randn(5, 7).requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        neurons(constant, steps=6)
    assert max(t.numel() for t in saved) == 5 * 7


def test_native_operators_pass_torch_librarys_own_checks():
    """torch.library.opcheck: schema, autograd registration, fake (shape-only) kernels for torch.compile."""
    resolve_backend("native")
    torch.manual_seed(0)
    x, params = torch.randn(4, 6, 5), [torch.rand(2, 5) for _ in range(3)]
    x.requires_grad_(True)
    params[0].requires_grad_(True)
    torch.library.opcheck(torch.ops.spikerl.cuba_lif_forward.default, (x, 4, *params, True, True, 0, 5.0))
    torch.library.opcheck(torch.ops.spikerl.leaky_readout_forward.default, (x, *params[:2]))


def test_backends_refuse_what_they_cannot_run():
    with pytest.raises(SpikerlError, match="'native' runs float32 on cpu; got float64 on cpu"):
        layer("native", "uniform")(torch.randn(2, 2, 7, dtype=torch.float64))
    with pytest.raises(SpikerlError, match="'native' runs on cpu, not cuda"):
        resolve_backend("native", "cuda")
    with pytest.raises(SpikerlError, match="unknown backend 'banana'"):
        get_backend("banana")


def test_native_compiles_a_copy_in_its_cache_so_checkouts_share_one_build():
    from spikerl.snn.backends import native

    native.build()
    cache = native.build_directory()
    assert (cache / native.SOURCE.name).read_text() == native.SOURCE.read_text()
    ninja = (cache / "build.ninja").read_text()
    assert str(cache / native.SOURCE.name) in ninja and str(native.SOURCE) not in ninja


def test_native_without_a_cpp_compiler_is_one_clear_error(monkeypatch):
    from spikerl.snn.backends import native

    monkeypatch.setattr(native, "_built", False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with pytest.raises(SpikerlError, match="found no C\\+\\+ compiler"):
        build_network(NetworkConfig(hidden=[8], backend="native"), 4, 2)


def test_auto_falls_back_to_fused_without_a_compiler_and_says_so(monkeypatch, capsys):
    from spikerl.snn import backends
    from spikerl.snn.backends import native

    monkeypatch.setattr(backends, "_resolved_auto", {})
    monkeypatch.setattr(native, "_built", False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert resolve_backend("auto", "cpu") == "fused"
    assert resolve_backend("auto", "cpu") == "fused"  # resolved once
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["spikerl: network.backend auto -> fused on cpu (native is unavailable: the native backend compiles "
                   "C++ kernels on first use and found no C++ compiler (set CXX, or install g++); or choose "
                   "network.backend fused)"]


def test_compiled_without_a_cpp_compiler_is_one_clear_error(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SpikerlError, match="needs a C\\+\\+ compiler"):
        build_network(NetworkConfig(hidden=[8], backend="compiled"), 4, 2)


def test_a_torch_compile_failure_is_one_clear_error():
    import torch._dynamo.exc

    from spikerl.snn.backends.fused import _compile_errors

    def fails(*args):
        raise torch._dynamo.exc.TorchRuntimeError("the compiler's own message\nlast line: boom")

    with pytest.raises(SpikerlError, match="torch.compile failed \\(last line: boom\\); choose fused"):
        _compile_errors(fails)(1)
    with pytest.raises(ValueError):  # anything else is not the compiler's and passes through unchanged
        _compile_errors(lambda: int("x"))()


# ----------------------------------------------------------------------------- whole networks

NEURONS = {
    "uniform": NeuronConfig(alpha=[0.0, 0.5], beta=0.5, theta=0.3),
    "randomized": NeuronConfig(alpha=[0.2, 0.5], beta=0.6, theta=0.3, randomize="normal", spread=0.3),
    "learnable": NeuronConfig(alpha=0.5, beta=[0.4, 0.8], theta=0.25, randomize="uniform", learnable=True),
    "subtract": NeuronConfig(alpha=[0.0, 0.5], beta=0.5, theta=0.3, reset="subtract"),
}


def twins(backend, encoder="two_neuron", decoder="membrane", neuron="randomized", bias=True):
    cfg = NetworkConfig(hidden=[24, 16], timesteps=5, encoder=encoder, decoder=decoder, population_size=3, bias=bias,
                        neuron=copy.deepcopy(NEURONS[neuron]), backend="reference")
    reference = build_network(cfg, 4, 3, torch.Generator().manual_seed(0))
    cfg.backend = backend
    other = build_network(cfg, 4, 3, torch.Generator().manual_seed(0))
    other.load_state_dict(reference.state_dict())
    return reference, other


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("decoder", ["membrane", "integrator", "population"])
def test_networks_train_alike_on_every_backend(backend, decoder):
    reference, other = twins(backend, decoder=decoder, neuron="learnable")
    obs = torch.randn(9, 4)
    out_r, spikes_r = reference.forward_with_spikes(obs)
    out_o, spikes_o = other.forward_with_spikes(obs)
    assert all(torch.equal(a, b) for a, b in zip(spikes_r, spikes_o))
    assert torch.allclose(out_r, out_o, atol=1e-6)
    out_r.square().sum().backward()
    out_o.square().sum().backward()
    for (name, p_r), (_, p_o) in zip(reference.named_parameters(), other.named_parameters()):
        assert torch.allclose(p_r.grad, p_o.grad, atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("backend", ["fused", "native"])
@pytest.mark.parametrize("neuron", list(NEURONS))
@pytest.mark.parametrize("encoder, decoder", [("two_neuron", "membrane"), ("two_neuron", "integrator"),
                                              ("direct", "population"), ("population", "membrane"),
                                              ("poisson", "integrator")])
def test_networks_act_identically_on_every_backend(backend, encoder, decoder, neuron):
    """Passes without gradients (acting, targets, evaluation) give the reference's spikes and outputs exactly."""
    reference, other = twins(backend, encoder, decoder, neuron)
    obs = torch.randn(33, 4) * 1.5
    with torch.no_grad():
        torch.manual_seed(5)  # the Poisson encoder draws: the same draws on both
        out_r, spikes_r = reference.forward_with_spikes(obs)
        torch.manual_seed(5)
        out_o, spikes_o = other.forward_with_spikes(obs)
    for i, (a, b) in enumerate(zip(spikes_r, spikes_o)):
        assert 0 < a.mean() < 1, f"layer {i} all or nothing: the comparison would be empty"
        assert torch.equal(a, b), i
    assert torch.equal(out_r, out_o)


@pytest.mark.parametrize("backend", TRAINING)
def test_repeated_and_interleaved_batch_shapes_do_not_leak_state(backend):
    reference, other = twins(backend)
    one, many = torch.randn(1, 4), torch.randn(100, 4)
    with torch.no_grad():
        expected_one, expected_many = reference(one), reference(many)
        results = [other(one), other(many), other(one), other(many), other(one)]
    assert all(torch.equal(r, expected_one) for r in results[::2])
    assert all(torch.equal(r, expected_many) for r in results[1::2])
    assert results[0] is not results[2]  # outputs are fresh tensors, not views of reused buffers


def test_a_network_switches_backend_at_run_time_and_keeps_its_outputs():
    reference, native = twins("native")
    obs = torch.randn(7, 4)
    with torch.no_grad():
        before = native(obs)
        native.set_backend("reference")
        assert native.backend == "reference" and torch.equal(native(obs), before) and torch.equal(reference(obs), before)
