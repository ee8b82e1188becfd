"""The paper's released code (mahmoudakl/dsrl) trained on CartPole-v0 under its own protocol, as reference
figures for spikerl's `configs/cartpole_dqn_snn.yaml` (docs/results.md).

    git clone https://github.com/mahmoudakl/dsrl /tmp/dsrl      # 8b3877c or later: it runs on Gymnasium
    .venv/bin/python benchmarks/dsrl_reference.py /tmp/dsrl                      # as released
    .venv/bin/python benchmarks/dsrl_reference.py /tmp/dsrl --reset once --input two_neuron

It runs dsrl's own `src/dqn_agent.py` and `src/model.py` unchanged, with the CartPole notebook's settings
(`CartPole-v0/training_q_learning.ipynb`: DSNN [4, 64, 64, 2], alpha = beta = 0.5, threshold 0.2,
simulation time 3, batch 128, gamma 0.999, epsilon 1 -> 0.05 x 0.999 per step, an update every 4 steps,
a target copy every 100, buffer 40k, Adam 1e-3, 500 episodes) and its training seeds
(`seeds/training_seeds.npy`), and prints the figure its `Agent.train_agent` reports: the best
100-episode average of training returns and the episode it is reached at, per run, and their mean.

Two choices the released code leaves open: `--reset every` is the code as released, whose Gymnasium
port resets every episode with the run's seed (every episode starts from one state); `--reset once`
seeds only the first reset, as the code did under gym when the paper was published (61676d3) and as
spikerl does. `--input raw` is the notebook's 4-wide observation; `two_neuron` is the 8-wide (x, 0) /
(0, |x|) input of dsrl's shipped CartPole networks and of spikerl's preset. `--network ann` trains
its QNetwork instead. One process per run, `--jobs` at a time, one torch thread each.

`--check-network` trains nothing: it loads spikerl's spiking Q-network of `configs/cartpole_dqn_snn.yaml`
into dsrl's `DSNN` (same weights; dsrl interleaves the two-neuron pairs, spikerl puts the positive parts
first) and prints the largest differences of their Q-values and weight gradients on a batch of 128.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NOTEBOOK = dict(batch_size=128, gamma=0.999, eps_start=1.0, eps_end=0.05, eps_decay=0.999, update_every=4,
                target_update_frequency=100, learning_rate=1e-3, memory_size=40_000, tau=1e-3, max_steps=200,
                alpha=0.5, beta=0.5, threshold=0.2, simulation_time=3, weight_scale=1, hidden=[64, 64])


def train_one(dsrl: Path, run: int, episodes: int, reset: str, input_kind: str, network: str, out: Path) -> dict:
    """One run of dsrl's Agent.train_agent in this process (called in a child process by `main`)."""
    import random

    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(dsrl / "src"))
    import dqn_agent  # dsrl's, unchanged
    from model import DSNN, QNetwork

    n = NOTEBOOK
    seed = int(np.load(dsrl / "seeds" / "training_seeds.npy")[run])
    torch.manual_seed(seed)  # the notebook's seeding block
    random.seed(seed)
    architecture = [8 if input_kind == "two_neuron" else 4, *n["hidden"], 2]
    if network == "snn":
        make = lambda: DSNN(architecture, seed, n["alpha"], n["beta"], n["weight_scale"], n["batch_size"],  # noqa: E731
                            n["threshold"], n["simulation_time"], n["learning_rate"])
    else:
        make = lambda: QNetwork(architecture, seed)  # noqa: E731
    policy_net, target_net = make(), make()
    target_net.load_state_dict(policy_net.state_dict())
    optimizer = torch.optim.Adam(policy_net.parameters(), lr=n["learning_rate"])
    out.mkdir(parents=True, exist_ok=True)
    agent = dqn_agent.Agent("CartPole-v0", policy_net, target_net, architecture, n["batch_size"], n["memory_size"],
                            n["gamma"], n["eps_start"], n["eps_end"], n["eps_decay"], n["update_every"],
                            n["target_update_frequency"], optimizer, n["learning_rate"], episodes, n["max_steps"],
                            run, str(out), seed, n["tau"], spiking=network == "snn",
                            two_neuron=input_kind == "two_neuron")
    if reset == "once":  # seed the first reset only, as gym's env.seed(seed) did before the Gymnasium port
        env_reset, first = agent.env.reset, [True]

        def reset_once(*args, **kwargs):
            if not first[0]:
                kwargs.pop("seed", None)
            first[0] = False
            return env_reset(*args, **kwargs)

        agent.env.reset = reset_once
    _, scores, best, best_episode = agent.train_agent()
    return {"run": run, "seed": seed, "best_average": float(best), "episode": int(best_episode),
            "steps": int(agent.t_step_total), "scores": [float(s) for s in scores]}


def check_network(dsrl: Path) -> None:
    """spikerl's and dsrl's spiking Q-networks with the same weights: Q-values and gradients side by side."""
    import numpy as np
    import torch

    sys.path.insert(0, str(dsrl / "src"))
    from model import DSNN

    from spikerl.config import load_config
    from spikerl.snn.network import build_network

    torch.manual_seed(0)
    cfg = load_config("configs/cartpole_dqn_snn.yaml")
    ours = build_network(cfg.network, 4, 2)
    n = NOTEBOOK
    batch = n["batch_size"]
    theirs = DSNN([8, *n["hidden"], 2], 0, n["alpha"], n["beta"], n["weight_scale"], batch, n["threshold"],
                  n["simulation_time"], n["learning_rate"])
    interleave = [i // 2 + 4 * (i % 2) for i in range(8)]  # dsrl's input 2i is x_i+, 2i + 1 is x_i-
    ours_weights = [ours.layers[0].weight, ours.layers[1].weight, ours.decoder.fc.weight]
    theirs.weights = [ours_weights[0].detach()[:, interleave].t().clone().requires_grad_(True),
                      *(w.detach().t().clone().requires_grad_(True) for w in ours_weights[1:])]
    obs = torch.as_tensor(np.random.default_rng(1).normal(size=(batch, 4)) * [0.5, 1.0, 0.1, 1.0], dtype=torch.float32)
    pairs = torch.stack([obs.clamp(min=0), (-obs).clamp(min=0)], dim=-1).reshape(batch, 8)  # (x+, x-) per component
    q_ours, q_theirs = ours(obs), theirs.forward(pairs)[0]
    weights = torch.randn(batch, 2, generator=torch.Generator().manual_seed(3))
    (q_ours * weights).sum().backward()
    (q_theirs * weights).sum().backward()
    print(f"Q-values: largest difference {(q_ours - q_theirs).abs().max().item():.3g} (mean |Q| "
          f"{q_theirs.abs().mean().item():.3g})")
    theirs_grads = [theirs.weights[0].grad.t()[:, interleave.index(i)] for i in range(8)]
    grads = [(ours_weights[0].grad, torch.stack(theirs_grads, dim=1))]
    grads += [(w.grad, t.grad.t()) for w, t in zip(ours_weights[1:], theirs.weights[1:])]
    for layer, (g_ours, g_theirs) in enumerate(grads):
        print(f"layer {layer} weight gradients: largest difference {(g_ours - g_theirs).abs().max().item():.3g} "
              f"(largest |gradient| {g_theirs.abs().max().item():.3g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsrl", type=Path, help="a checkout of github.com/mahmoudakl/dsrl (8b3877c or later)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--reset", choices=["every", "once"], default="every")
    parser.add_argument("--input", dest="input_kind", choices=["raw", "two_neuron"], default="raw")
    parser.add_argument("--network", choices=["snn", "ann"], default="snn")
    parser.add_argument("--out", type=Path, default=Path("runs/dsrl-reference"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--check-network", action="store_true", help="compare the two networks; train nothing")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for needed in ("src/dqn_agent.py", "src/model.py", "seeds/training_seeds.npy"):
        if not (args.dsrl / needed).is_file():
            sys.exit(f"dsrl_reference: {args.dsrl / needed} not found: give a checkout of mahmoudakl/dsrl")
    if args.check_network:
        check_network(args.dsrl)
        return
    tag = f"{args.network}-{args.input_kind}-reset_{args.reset}"
    if args.child is not None:
        out = args.out / tag / f"run{args.child}"
        result = train_one(args.dsrl, args.child, args.episodes, args.reset, args.input_kind, args.network, out)
        (out / "result.json").write_text(json.dumps(result))
        return

    def run(i: int) -> dict:
        path = args.out / tag / f"run{i}" / "result.json"
        if not path.exists():  # finished runs are kept: stopped, the script resumes with the rest
            subprocess.run([sys.executable, __file__, str(args.dsrl), "--runs", str(args.runs), "--episodes",
                            str(args.episodes), "--reset", args.reset, "--input", args.input_kind, "--network",
                            args.network, "--out", str(args.out), "--child", str(i)],
                           check=True, stdout=subprocess.DEVNULL)
        return json.loads(path.read_text())

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, range(args.runs)))
    per_run = ", ".join(f"{r['best_average']:.1f} ({r['episode']})" for r in results)
    mean = sum(r["best_average"] for r in results) / len(results)
    print(f"dsrl CartPole-v0, {tag}, {args.episodes} episodes: best 100-episode average per run (episode): "
          f"{per_run}; mean {mean:.1f}")


if __name__ == "__main__":
    main()
