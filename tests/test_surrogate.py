"""Surrogate derivatives against their formulas; the forward pass is a strict Heaviside."""

import math

import pytest
import torch

from spikerl.snn.surrogate import SpikeFunction

POINTS = torch.tensor([-0.5, -0.01, 0.0, 0.01, 0.3, 2.0])


def grad_at(spike: SpikeFunction, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    out = spike(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    return g


@pytest.mark.parametrize("name", ["fast_sigmoid", "atan", "rectangular"])
def test_forward_is_strict_heaviside(name):
    out = SpikeFunction(name)(POINTS)
    assert out.tolist() == [0, 0, 0, 1, 1, 1]


def test_fast_sigmoid_derivative():
    g = grad_at(SpikeFunction("fast_sigmoid", slope=100.0), POINTS)
    expected = [1 / (100 * abs(x) + 1) ** 2 for x in POINTS.tolist()]
    assert g.tolist() == pytest.approx(expected)
    assert g[2].item() == 1.0  # peak 1 at the threshold
    assert g[3].item() == pytest.approx(0.25)  # 1 / (100 * 0.01 + 1)^2


def test_fast_sigmoid_default_slope_is_the_papers():
    assert SpikeFunction("fast_sigmoid").scale == 100.0


def test_atan_derivative():
    g = grad_at(SpikeFunction("atan", slope=2.0), POINTS)
    expected = [1.0 / (1 + (math.pi * x) ** 2) for x in POINTS.tolist()]
    assert g.tolist() == pytest.approx(expected)


def test_rectangular_derivative():
    g = grad_at(SpikeFunction("rectangular", width=1.0), POINTS)
    assert g.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # |x| < 0.5, open window
    g = grad_at(SpikeFunction("rectangular", width=0.5), POINTS)
    assert g.tolist() == [0.0, 2.0, 2.0, 2.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["fast_sigmoid", "atan", "rectangular"])
def test_derivative_method_matches_autograd(name):
    spike = SpikeFunction(name, slope=7.0, width=0.8)
    assert torch.allclose(grad_at(spike, POINTS), spike.derivative(POINTS))


def test_unknown_surrogate_is_refused():
    with pytest.raises(ValueError, match="unknown surrogate"):
        SpikeFunction("sigmoid")
