"""CUBA-LIF recurrence against hand-computed values."""

import pytest
import torch

from spikerl.snn.membrane import MembraneParameters
from spikerl.snn.backends.reference import cuba_lif_multistep
from spikerl.snn.neuron import CubaLIFParams, cuba_lif_step, zero_state
from spikerl.snn.surrogate import SpikeFunction

SPIKE = SpikeFunction("fast_sigmoid", 100.0)


def params(alpha, beta, theta):
    return CubaLIFParams(torch.tensor(alpha), torch.tensor(beta), torch.tensor(theta))


def run_steps(inputs, p, reset):
    state = zero_state(torch.zeros(1, 1))
    spikes, currents, voltages = [], [], []
    for x in inputs:
        s, state = cuba_lif_step(torch.tensor([[x]]), state, p, SPIKE, reset)
        spikes.append(s.item())
        currents.append(state.current.item())
        voltages.append(state.voltage.item())
    return spikes, currents, voltages


# alpha = beta = 0.5, theta = 1, input 0.6, 0.6, 0, 0, 0, worked by hand:
#   t1: I = 0.6,             V = 0.6                          no spike
#   t2: I = 0.3 + 0.6 = 0.9, V = 0.3 + 0.9 = 1.2 > 1          spike; hard: V = 0, subtract: V = 0.2
#   t3: I = 0.45,            hard V = 0.45;    subtract V = 0.1 + 0.45 = 0.55
#   t4: I = 0.225,           hard V = 0.45;    subtract V = 0.275 + 0.225 = 0.5
#   t5: I = 0.1125,          hard V = 0.3375;  subtract V = 0.25 + 0.1125 = 0.3625
INPUTS = [0.6, 0.6, 0.0, 0.0, 0.0]
CURRENTS = [0.6, 0.9, 0.45, 0.225, 0.1125]


def test_hard_reset_matches_hand_computation():
    spikes, currents, voltages = run_steps(INPUTS, params(0.5, 0.5, 1.0), "hard")
    assert spikes == [0, 1, 0, 0, 0]
    assert currents == pytest.approx(CURRENTS)
    assert voltages == pytest.approx([0.6, 0.0, 0.45, 0.45, 0.3375])


def test_subtract_reset_matches_hand_computation():
    spikes, currents, voltages = run_steps(INPUTS, params(0.5, 0.5, 1.0), "subtract")
    assert spikes == [0, 1, 0, 0, 0]
    assert currents == pytest.approx(CURRENTS)
    assert voltages == pytest.approx([0.6, 0.2, 0.55, 0.5, 0.3625])


def test_threshold_is_strict():
    # V exactly equal to theta does not spike; just above does.
    spikes, _, _ = run_steps([1.0], params(0.0, 0.0, 1.0), "hard")
    assert spikes == [0]
    spikes, _, _ = run_steps([1.0 + 1e-6], params(0.0, 0.0, 1.0), "hard")
    assert spikes == [1]


def test_multistep_equals_step_loop_and_starts_from_rest():
    torch.manual_seed(0)
    currents = torch.rand(6, 3, 4)
    p = params(0.7, 0.8, 0.9)
    out = cuba_lif_multistep(currents, p, SPIKE, "hard")
    state = zero_state(currents[0])
    for t in range(6):
        s, state = cuba_lif_step(currents[t], state, p, SPIKE, "hard")
        assert torch.equal(out[t], s)
    # A second call starts from zero again: same result.
    assert torch.equal(cuba_lif_multistep(currents, p, SPIKE, "hard"), out)


def test_per_neuron_parameters_apply_neuron_by_neuron():
    # Two neurons, same input 1.0, thresholds 0.5 and 1.5, no memory: only the first spikes.
    p = CubaLIFParams(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.5, 1.5]))
    s, state = cuba_lif_step(torch.ones(1, 2), zero_state(torch.zeros(1, 2)), p, SPIKE, "hard")
    assert s.tolist() == [[1.0, 0.0]]
    assert state.voltage.tolist() == [[0.0, 1.0]]
    # Per-neuron decays: second step with no input leaves beta_i * V_i.
    p = CubaLIFParams(torch.tensor([0.0, 0.0]), torch.tensor([0.25, 0.75]), torch.tensor([5.0, 5.0]))
    state = zero_state(torch.zeros(1, 2))
    _, state = cuba_lif_step(torch.ones(1, 2), state, p, SPIKE, "hard")
    _, state = cuba_lif_step(torch.zeros(1, 2), state, p, SPIKE, "hard")
    assert state.voltage[0].tolist() == pytest.approx([0.25, 0.75])


def test_randomized_membrane_parameters_follow_the_recurrence():
    gen = torch.Generator().manual_seed(3)
    m = MembraneParameters(5, 0.5, 0.5, 1.0, randomize="normal", spread=0.2, generator=gen)
    p = m.params()
    x = torch.full((1, 5), 0.6)
    state = zero_state(x)
    _, state = cuba_lif_step(x, state, p, SPIKE, "hard")
    _, state = cuba_lif_step(x, state, p, SPIKE, "hard")
    # By hand, per neuron: I2 = alpha*0.6 + 0.6, V2 = beta*0.6 + I2 (before reset).
    expected_v = p.beta * 0.6 + p.alpha * 0.6 + 0.6
    spiked = expected_v > p.theta
    assert torch.allclose(state.current[0], p.alpha * 0.6 + 0.6)
    assert torch.allclose(state.voltage[0], torch.where(spiked, torch.zeros(5), expected_v))


def test_learnable_parameters_follow_the_recurrence_and_get_gradients():
    m = MembraneParameters(1, 0.5, 0.5, 1.0, learnable=True)
    p = m.params()
    assert p.alpha.item() == pytest.approx(0.5) and p.theta.item() == pytest.approx(1.0)
    spikes, _, voltages = run_steps(INPUTS, p, "hard")
    assert spikes == [0, 1, 0, 0, 0]
    assert voltages == pytest.approx([0.6, 0.0, 0.45, 0.45, 0.3375])
    out = cuba_lif_multistep(torch.full((5, 1, 1), 0.6), m.params(), SPIKE, "hard")
    out.sum().backward()
    for raw in (m.alpha_raw, m.beta_raw, m.theta_raw):
        assert raw.grad is not None and raw.grad.abs().sum() > 0


def test_detach_reset_changes_only_the_gradient():
    x = torch.full((4, 1, 1), 0.7, requires_grad=True)
    p = params(0.5, 0.5, 1.0)
    a = cuba_lif_multistep(x, p, SPIKE, "hard", detach_reset=True)
    (ga,) = torch.autograd.grad(a.sum(), x)
    b = cuba_lif_multistep(x, p, SPIKE, "hard", detach_reset=False)
    (gb,) = torch.autograd.grad(b.sum(), x)
    assert torch.equal(a, b)
    assert not torch.allclose(ga, gb)


def test_unknown_reset_is_refused():
    with pytest.raises(ValueError, match="unknown reset"):
        run_steps([1.0], params(0.5, 0.5, 1.0), "soft")
