"""Agent-steps per second of populations of K agents trained in lockstep in one process (one thread).

    .venv/bin/python benchmarks/population_speed.py                       # CartPole DQN K = 1 8 32 128, TD3 K = 1 4
    .venv/bin/python benchmarks/population_speed.py --dqn 1 8 --td3 --steps 1000 --device cuda

Each population is seeds 0..K-1 of a preset, trained for --steps environment steps (updates from early
on, no periodic evaluation, one final episode), timed from start to finish of the training call; the
table gives agent-steps per second and the ratio to K = 1 measured in the same invocation. Run on an
otherwise idle machine: the ratios are what matter, and they are taken side by side in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from spikerl.config import load_config
from spikerl.rl.population import seed_configs, train_population

CASES = {
    "dqn": ("configs/cartpole_dqn_quickstart.yaml", ["dqn.learning_starts=128"]),
    "td3": ("configs/halfcheetah_td3_snn.yaml", ["td3.learning_starts=200"]),
}


def agent_steps_per_second(algo: str, agents: int, steps: int, device: str, root: Path) -> float:
    config, overrides = CASES[algo]
    base = load_config(config, [*overrides, f"total_steps={steps}", "eval.every=0", "eval.final_episodes=1",
                                "checkpoint_every=0", "progress=false", "threads=1", f"device={device}"])
    home = root / f"{algo}-K{agents}"
    start = time.perf_counter()
    train_population(home, seed_configs(base, list(range(agents)), home))
    return agents * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dqn", type=int, nargs="*", default=[1, 8, 32, 128], help="population sizes for DQN")
    parser.add_argument("--td3", type=int, nargs="*", default=[1, 4], help="population sizes for TD3 (HalfCheetah)")
    parser.add_argument("--steps", type=int, default=2000, help="environment steps per population")
    parser.add_argument("--td3-steps", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for algo, sizes, steps in (("dqn", args.dqn, args.steps), ("td3", args.td3, args.td3_steps)):
            if not sizes:
                continue
            # Untimed first: the process's one-time costs (imports, kernel checks, environment registration).
            agent_steps_per_second(algo, 1, 300, args.device, Path(tmp) / "warm-up")
            print(f"\n{CASES[algo][0]}, {steps} steps, {args.device}, one thread")
            print("| agents | agent-steps/s | x K = 1 |\n|---|---|---|")
            first = None
            for agents in sizes:
                speed = agent_steps_per_second(algo, agents, steps, args.device, Path(tmp))
                first = first or speed
                print(f"| {agents} | {speed:.0f} | {speed / first:.1f} |", flush=True)


if __name__ == "__main__":
    main()
