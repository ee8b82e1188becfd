"""How far Adam moves each weight tensor of a run, read from a checkpoint's optimizer moments.

    .venv/bin/python benchmarks/adam_moments.py runs/ppo-probe/eps/walker2d
    .venv/bin/python benchmarks/adam_moments.py runs/x/checkpoints/step_51200.pt --adam-eps 1e-8

Adam steps each element by lr * m / (sqrt(v) + eps), with m and v its bias-corrected running means of
the gradient and of its square. So sqrt(v) is the element's gradient scale: where it is far below eps,
the element steps far below the learning rate, whatever its gradient's direction. For each tensor that
an optimizer of the checkpoint holds (PPO's groups: the policy's network, the value network, the
log-std when it has its own rate; stacked [K, ...] over a population's agents, pooled here unless
--agent is given), printed: the quantiles of sqrt(v), and the mean of |m| / (sqrt(v) + eps), the
average step as a share of the learning rate (for a steady gradient 1; for zero-mean Gaussian noise
sqrt(2 / pi) sqrt((1 - beta1) / (1 + beta1)) = 0.18 with beta1 0.9). --adam-eps recomputes that share for another
eps, the step the same moments would give there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from spikerl.rl.checkpoint import load_checkpoint

QUANTILES = (0.1, 0.5, 0.9)
PPO_GROUPS = ("policy", "value", "log_std")  # ppo.py's Adam groups, by index


def newest_checkpoint(path: Path) -> Path:
    """`path` itself, or the newest checkpoint in a run (or population) folder's checkpoints/."""
    if path.is_file():
        return path
    found = sorted((path / "checkpoints").glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
    if not found:
        raise SystemExit(f"no checkpoint in {path / 'checkpoints'} (a finished run keeps none; read one mid-run)")
    return found[-1]


def moment_rows(optimizer_state: dict, algo: str, agent: int | None, adam_eps: float | None) -> list[tuple]:
    """(group, tensor index, shape, step count, sqrt(v) quantiles, mean step / learning rate) per tensor."""
    rows = []
    for g, group in enumerate(optimizer_state["param_groups"]):
        label = PPO_GROUPS[g] if algo == "ppo" and g < len(PPO_GROUPS) else f"group {g}"
        beta1, beta2 = group["betas"]
        eps = group["eps"] if adam_eps is None else adam_eps
        for i, index in enumerate(group["params"]):
            state = optimizer_state["state"].get(index)
            if not state:
                continue
            steps = float(state["step"])
            m = state["exp_avg"] / (1 - beta1 ** steps)
            v = state["exp_avg_sq"] / (1 - beta2 ** steps)
            if agent is not None:
                m, v = m[agent], v[agent]
            scale = v.sqrt().flatten().double()
            share = (m.abs().flatten().double() / (scale + eps)).mean().item()
            sample = scale[torch.randperm(scale.numel(), generator=torch.Generator().manual_seed(0))[:100_000]]
            quantiles = torch.quantile(sample, torch.tensor(QUANTILES, dtype=torch.double)).tolist()
            rows.append((label, i, tuple(state["exp_avg"].shape), int(steps), quantiles, share, eps))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run or population folder (its newest checkpoint) or a checkpoint")
    parser.add_argument("--agent", type=int, default=None, help="one agent of a population (default: all pooled)")
    parser.add_argument("--adam-eps", type=float, default=None, help="the share of the learning rate at this eps")
    args = parser.parse_args()
    path = newest_checkpoint(args.path)
    checkpoint = load_checkpoint(path)
    print(f"{path}: {checkpoint['algo']} on {checkpoint['env_id']}, step {checkpoint['step']}")
    for name, state in checkpoint["components"].items():
        if not (isinstance(state, dict) and "param_groups" in state and "state" in state):
            continue
        print(f"\n{name}: group, tensor, shape [K, ...], Adam steps, sqrt(v) at quantiles "
              f"{', '.join(f'{q:g}' for q in QUANTILES)}; mean step / learning rate (at eps)")
        for label, i, shape, steps, quantiles, share, eps in moment_rows(state, checkpoint["algo"], args.agent,
                                                                          args.adam_eps):
            print(f"  {label:8s} {i:2d} {str(list(shape)):16s} {steps:7d}  "
                  f"{'  '.join(f'{q:.1e}' for q in quantiles)}   {share:.3f} (eps {eps:g})")


if __name__ == "__main__":
    main()
