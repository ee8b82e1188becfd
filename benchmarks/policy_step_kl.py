"""How far one optimizer step moves a trained Gaussian policy (PPO's), spiking or ANN, on its own task.

    .venv/bin/python benchmarks/policy_step_kl.py runs/ppo-mujoco/halfcheetah/snn-s0 runs/ppo-mujoco/halfcheetah/ann-s0

For each run folder: the policy (final model) acts for `--states` steps with exploration noise of std 0.3
to collect states; a policy-gradient step on random actions drawn from the policy and random standard-normal
advantages (the shape of a PPO minibatch gradient, without its direction) then moves every weight by
`lr` in the direction of its gradient's sign, the size of an Adam step on a steady gradient. Printed:
the mean over states of KL(pi_old || pi_new) = sum_d (mu_new - mu_old)^2 / (2 sigma_d^2), averaged over
`--repeats` steps, for each learning rate. An ANN's KL falls with the square of the step; a spiking
policy's falls more slowly, because a step that flips a spike moves its output by a whole readout weight.
`--parts hidden,readout` also takes the step on the hidden layers alone and on the output layer alone: a
spiking policy's readout is linear in its spike counts, so a step there moves it as smoothly as an ANN's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from spikerl.rl.envs import make_env
from spikerl.rl.evaluate import load_policy, visited_states
from spikerl.snn.network import output_layer


def stepped_parameters(policy, part: str) -> list[torch.nn.Parameter]:
    """The parameters a step moves: all of the network's, its hidden layers' or its output layer's."""
    readout = list(output_layer(policy.net).parameters())
    everything = [p for p in policy.net.parameters() if p.requires_grad]
    if part == "all":
        return everything
    if part == "readout":
        return readout
    return [p for p in everything if not any(p is q for q in readout)]


def step_kl(policy, states: torch.Tensor, learning_rate: float, generator: torch.Generator,
            part: str = "all") -> float:
    params = stepped_parameters(policy, part)
    x = policy.obs_norm(states)
    std = policy.log_std.detach().exp()
    readout = policy.net(x)
    before = readout.detach()
    actions = before + std * torch.randn(before.shape, generator=generator)
    advantages = torch.randn(len(states), generator=generator)
    log_prob = (-0.5 * ((actions - readout) / std) ** 2).sum(dim=-1)
    grads = torch.autograd.grad(-(advantages * log_prob).mean(), params)
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(learning_rate * g.sign())
        after = policy.net(x)
        for p, s in zip(params, saved):
            p.copy_(s)
    return float((((after - before) / std) ** 2 / 2).sum(dim=-1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="PPO run folders with a Gaussian policy")
    parser.add_argument("--learning-rates", default="3e-4,1e-4,3e-5")
    parser.add_argument("--states", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default="all", help="comma-separated: all, hidden, readout")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates = [float(r) for r in args.learning_rates.split(",")]
    parts = args.parts.split(",")
    if set(parts) - {"all", "hidden", "readout"}:
        raise SystemExit(f"--parts takes all, hidden and readout; got {args.parts}")
    for run in args.runs:
        cfg, policy = load_policy(run, backend="reference")
        if policy.discrete:
            raise SystemExit(f"{run}: a categorical policy; this measures Gaussian ones")
        env = make_env(cfg.env_id, "ppo", env_kwargs=cfg.env_kwargs)
        states = torch.as_tensor(visited_states(policy, env, args.states, args.seed, exploration_std=0.3))
        env.close()
        for part in parts:
            generator = torch.Generator().manual_seed(args.seed)
            kls = [np.mean([step_kl(policy, states, rate, generator, part) for _ in range(args.repeats)])
                   for rate in rates]
            moved = "" if part == "all" else f", {part} only"
            print(f"{run} ({cfg.network.kind}, log-std mean {policy.log_std.mean().item():.2f}{moved}): KL after one "
                  "step of " + ", ".join(f"{rate:g}: {kl:.4f}" for rate, kl in zip(rates, kls)))


if __name__ == "__main__":
    main()
