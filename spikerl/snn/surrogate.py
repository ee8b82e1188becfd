"""Spike functions: Heaviside forward, a surrogate derivative backward.

Each takes x = V - theta and returns S = H(x) = 1 if x > 0 else 0 (strict). The backward pass
replaces the Dirac delta dS/dx with a smooth or boxed stand-in:

    fast_sigmoid (SuperSpike, the paper's):  dS/dx = 1 / (slope * |x| + 1)^2          slope = 100
    atan (SpikingJelly's ATan):               dS/dx = (slope / 2) / (1 + (pi/2 * slope * x)^2)   slope = 2
    rectangular (PopSAN):                     dS/dx = 1 / width  if |x| < width / 2, else 0       width = 1

PopSAN's released code pairs the rectangular one with a reset that passes gradient (`detach_reset: false`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

DEFAULT_SLOPE = {"fast_sigmoid": 100.0, "atan": 2.0}


def heaviside(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


def fast_sigmoid_grad(x: torch.Tensor, slope: float) -> torch.Tensor:
    return 1.0 / (slope * x.abs() + 1.0) ** 2


def atan_grad(x: torch.Tensor, slope: float) -> torch.Tensor:
    return (slope / 2.0) / (1.0 + (math.pi / 2.0 * slope * x) ** 2)


def rectangular_grad(x: torch.Tensor, width: float) -> torch.Tensor:
    return (x.abs() < width / 2.0).to(x.dtype) / width


_GRADS = {"fast_sigmoid": fast_sigmoid_grad, "atan": atan_grad, "rectangular": rectangular_grad}


class _SurrogateSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, grad_fn: Callable, scale: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.grad_fn, ctx.scale = grad_fn, scale
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.grad_fn(x, ctx.scale), None, None


class SpikeFunction:
    """A named surrogate with its scale, callable as spike(x). Picklable and comparable."""

    def __init__(self, name: str = "fast_sigmoid", slope: float | None = None, width: float = 1.0):
        if name not in _GRADS:
            raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(_GRADS)}")
        self.name = name
        self.scale = width if name == "rectangular" else (slope if slope is not None else DEFAULT_SLOPE[name])
        self.grad_fn = _GRADS[name]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SurrogateSpike.apply(x, self.grad_fn, self.scale)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """The surrogate dS/dx itself (for fused backward passes and tests)."""
        return self.grad_fn(x, self.scale)

    def __repr__(self) -> str:
        return f"SpikeFunction({self.name!r}, scale={self.scale})"
