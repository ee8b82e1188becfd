"""Can a network represent a trained PPO policy? Distil a teacher's Gaussian mean into a fresh student by DAgger.

    .venv/bin/python benchmarks/distill_policy.py runs/ppo-mujoco-t8-lsd/walker2d/ann/s0 \
        configs/walker2d_ppo_snn.yaml [network.timesteps=16 ...]

Where a spiking PPO policy ends below its ANN twin, the gap is either what the spiking network can represent
or how well PPO's surrogate gradients train it. Supervised learning separates the two: the student (the
network a config describes, fresh weights) learns the teacher's deterministic action, the mean clipped to the
action box, by mean squared error on the teacher's own normalized observations (the student reads the
teacher's normalizer, frozen). DAgger (Ross et al. 2011) gathers the states: the first round from the
teacher's episodes, each later round from the student's own, all labelled by the teacher and pooled, so the
student also learns to recover from its own mistakes. After each round the student plays `--eval-episodes`
deterministic episodes (seeds 10,000 on; the teacher plays the same ones). A student that reaches the
teacher's return can represent the policy, so PPO's training is what falls short; one that cannot, at any
budget, is limited by its network. Run the ANN twin's config as a student for the procedure's own ceiling:
a teacher whose return even a near-exact ANN copy does not keep is too fragile to tell either way.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from spikerl.config import load_config
from spikerl.errors import SpikerlError
from spikerl.rl.envs import make_env
from spikerl.rl.evaluate import evaluate, load_policy
from spikerl.rl.ppo import make_policy

EVAL_SEED = 10_000  # evaluation episodes, apart from the states' episodes (seeded from --seed)


def visited_states(policy, env, count: int, seed: int, exploration_std: float) -> np.ndarray:
    """`count` observations of `policy` acting (its deterministic action plus Gaussian noise) in `env`."""
    noise = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    states = np.empty((count, obs.shape[0]), dtype=np.float32)
    for i in range(count):
        states[i] = obs
        action = policy.act(obs)
        action = np.clip(action + exploration_std * noise.standard_normal(action.shape),
                         env.action_space.low, env.action_space.high)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    return states


def fit(student, states: torch.Tensor, targets: torch.Tensor, optimizer, epochs: int, batch: int,
        generator: torch.Generator) -> float:
    """`epochs` passes of minibatch MSE between the student's readout and the targets; the last epoch's mean."""
    losses = []
    for _ in range(epochs):
        losses = []
        for idx in torch.randperm(len(states), generator=generator).split(batch):
            loss = (student.net(states[idx]) - targets[idx]).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return float(np.mean(losses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", type=Path, help="a PPO run folder with a Gaussian policy (its final model)")
    parser.add_argument("student", type=Path, help="the student's PPO config (YAML)")
    parser.add_argument("overrides", nargs="*", help="key=value changes to the student's config")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--states", type=int, default=20000, help="states gathered per round")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the pooled states per round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--exploration-std", type=float, default=0.1,
                        help="action noise while gathering states, so they cover the teacher's neighbourhood")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, least in (("rounds", 1), ("states", 10), ("epochs", 1), ("batch", 1), ("eval_episodes", 1)):
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}")
    torch.set_num_threads(1)
    try:
        teacher_cfg, teacher = load_policy(args.teacher, backend="reference")
        cfg = load_config(args.student, args.overrides)
    except SpikerlError as exc:
        raise SystemExit(str(exc)) from None
    if cfg.algo != "ppo" or teacher.discrete:
        raise SystemExit("teacher and student must be PPO Gaussian policies")
    if cfg.env_id != teacher_cfg.env_id:
        raise SystemExit(f"the teacher plays {teacher_cfg.env_id}, the student's config {cfg.env_id}")
    torch.manual_seed(args.seed)
    env = make_env(cfg.env_id, "ppo", env_kwargs=cfg.env_kwargs)
    student = make_policy(cfg, env)
    if type(student.obs_norm) is not type(teacher.obs_norm):
        raise SystemExit("the student's observation normalizer differs from the teacher's")
    student.obs_norm.load_state_dict(teacher.obs_norm.state_dict())
    for setting in ("enabled", "clip"):  # the teacher's normalization, whatever the student's config says
        if hasattr(teacher.obs_norm, setting):
            setattr(student.obs_norm, setting, getattr(teacher.obs_norm, setting))
    optimizer = torch.optim.Adam(student.net.parameters(), lr=args.learning_rate)
    generator = torch.Generator().manual_seed(args.seed)

    def evaluated(policy) -> dict:
        with torch.no_grad():
            return evaluate(policy.act, cfg.env_id, args.eval_episodes, EVAL_SEED, env_kwargs=cfg.env_kwargs)

    teacher_eval = evaluated(teacher)
    print(f"teacher {args.teacher}: mean return {teacher_eval['mean_return']:.1f} "
          f"(length {teacher_eval['mean_length']:.0f}) over {args.eval_episodes} episodes")
    print(f"student {args.student} {' '.join(args.overrides)}: {cfg.network.kind}, hidden {cfg.network.hidden}, "
          f"T {cfg.network.timesteps}")
    pooled_states, pooled_targets = [], []
    for round_ in range(args.rounds):
        start = time.perf_counter()
        actor = teacher if round_ == 0 else student
        states = visited_states(actor, env, args.states, args.seed + round_, args.exploration_std)
        with torch.no_grad():
            normalized = teacher.obs_norm(torch.as_tensor(states))
            targets = teacher.deterministic(teacher.net(normalized))
        held_out = slice(0, len(states) // 10)  # this round's first tenth: new states, scored before training on them
        with torch.no_grad():
            new_error = (student.net(normalized[held_out]) - targets[held_out]).square().mean().item()
        pooled_states.append(normalized)
        pooled_targets.append(targets)
        train_error = fit(student, torch.cat(pooled_states), torch.cat(pooled_targets), optimizer, args.epochs,
                          args.batch, generator)
        result = evaluated(student)
        share = (f", {result['mean_return'] / teacher_eval['mean_return']:.2f} of the teacher"
                 if teacher_eval["mean_return"] > 0 else "")  # a ratio of negative returns reads backwards
        print(f"round {round_ + 1}: {sum(len(s) for s in pooled_states)} states, error on the round's new states "
              f"before training {new_error:.4f}, after training (pooled) {train_error:.4f}; mean return "
              f"{result['mean_return']:.1f} (length {result['mean_length']:.0f}){share} "
              f"[{time.perf_counter() - start:.0f} s]", flush=True)
    env.close()


if __name__ == "__main__":
    main()
