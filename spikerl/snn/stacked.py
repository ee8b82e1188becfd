"""K networks of one shape as one network with a leading agents dimension: populations trained in lockstep.

    stacked = stack_modules([net_0, ..., net_K-1])    K modules of one structure (their own weights and
                                                       membrane parameters) -> one module
    stacked(obs)                                       obs [K, B, in] -> [K, B, out]: agent k's rows run
                                                       through agent k's weights and neurons
    unstack_state(stacked, k)                          agent k's state_dict, as its own module holds it

Every linear map becomes a `StackedLinear` (weights [K, out, in], one batched matrix product for all
agents), and every other parameter or buffer of shape S becomes [K, 1, *S] (a scalar [K, 1, 1]), which
broadcasts against activations [*T, K, B, ...] as S did against [*T, B, ...]: membrane parameters
[K, 1, n], readout decays, action bounds, observation statistics. The spiking layers and their
backends already take parameters of that shape. Agents never mix: every product, decay and threshold
works on one agent's rows with that agent's values, so one optimizer over the stacked tensors is K
optimizers when it is elementwise, as Adam is.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F


class _AgentsLinear(torch.autograd.Function):
    """y = x W^T + b per agent over rows [K, R, in], with the backward a linear layer has (dW = dy^T x,
    dx = dy W, db = sum of dy): each agent's gradients are its own network's, bit for bit."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        transposed = weight.transpose(1, 2)
        return torch.bmm(x, transposed) if bias is None else torch.baddbmm(bias, x, transposed)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad_y, weight) if ctx.needs_input_grad[0] else None
        grad_weight = torch.bmm(grad_y.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_bias = grad_y.sum(dim=1, keepdim=True) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x W^T + b for one layer (weight [out, in]) or per agent (weight [K, out, in], bias [K, 1, out],
    x [K, B, in] or [T, K, B, in]). Per agent it is one batched product over the agent's T * B rows, the
    product one network's layer computes, with a linear layer's backward: an agent's outputs and gradients
    equal its own network's to rounding (bit for bit where BLAS runs both through the same kernel)."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    agents, out_features = weight.shape[0], weight.shape[1]
    if agents == 1:  # one agent: one network's own product (BLAS picks kernels by shape; a batched product's
        # small-matrix kernel sums in another order), so a population of one computes what a run alone did
        return F.linear(x.squeeze(-3), weight[0], None if bias is None else bias[0, 0]).unsqueeze(-3)
    rows = x.movedim(-3, 0)  # [K, *T, B, in]
    y = _AgentsLinear.apply(rows.reshape(agents, -1, x.shape[-1]), weight, bias)
    return y.reshape(*rows.shape[:-1], out_features).movedim(0, -3)


class StackedLinear(nn.Module):
    """K linear layers of one shape: weight [K, out, in], bias [K, 1, out]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.agents, self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None

    @classmethod
    def from_linears(cls, layers: list[nn.Linear]) -> StackedLinear:
        weight = torch.stack([layer.weight.detach() for layer in layers]).clone()
        bias = None if layers[0].bias is None else torch.stack([layer.bias.detach().unsqueeze(0) for layer in layers]).clone()
        return cls(weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"agents={self.agents}, in_features={self.in_features}, out_features={self.out_features}"


def _stack_values(values: list[torch.Tensor]) -> torch.Tensor:
    """[K, 1, *S] from K tensors of shape S ([K, 1, 1] for scalars)."""
    return torch.stack([v.detach().reshape(1, *v.shape) if v.dim() else v.detach().reshape(1, 1) for v in values]).clone()


def _set_child(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def stack_modules(modules: list[nn.Module]) -> nn.Module:
    """One module computing all of `modules` (one structure, any values) along a leading agents dimension.
    `agent_shapes` on the result records each state entry's shape in one agent, for `unstack_state`."""
    template = modules[0]
    stacked = copy.deepcopy(template)
    for name, sub in list(stacked.named_modules()):
        group = [m.get_submodule(name) if name else m for m in modules]
        if isinstance(sub, nn.Linear):
            _set_child(stacked, name, StackedLinear.from_linears(group))
            continue
        if isinstance(sub, StackedLinear):
            continue
        for pname, param in list(sub.named_parameters(recurse=False)):
            values = _stack_values([getattr(g, pname) for g in group])
            setattr(sub, pname, nn.Parameter(values, requires_grad=param.requires_grad))
        for bname, buffer in list(sub.named_buffers(recurse=False)):
            if buffer is not None:
                sub._buffers[bname] = _stack_values([getattr(g, bname) for g in group])
    stacked.agents = len(modules)
    stacked.agent_shapes = {key: tuple(value.shape) for key, value in template.state_dict().items()}
    return stacked


def unstack_state(stacked: nn.Module, agent: int) -> dict[str, torch.Tensor]:
    """Agent `agent`'s state_dict, shaped as one agent's module holds it (load it with `load_state_dict`)."""
    return {key: value[agent].reshape(stacked.agent_shapes[key]).clone()
            for key, value in stacked.state_dict().items()}
