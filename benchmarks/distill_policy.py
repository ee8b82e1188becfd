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
import copy
import time
from pathlib import Path

import numpy as np
import torch

from spikerl.config import load_config
from spikerl.errors import SpikerlError
from spikerl.rl.envs import make_env
from spikerl.rl.evaluate import evaluate, load_policy, visited_states
from spikerl.rl.ppo import make_policy

EVAL_SEED = 10_000  # evaluation episodes, apart from the states' episodes (seeded from --seed)


def fit(student, states: torch.Tensor, targets: torch.Tensor, optimizer, epochs: int, batch: int,
        generator: torch.Generator) -> float:
    """`epochs` passes of minibatch MSE between the student's readout and the targets; the last epoch's mean
    loss (its minibatches weighted alike), taken while the weights still move."""
    for _ in range(epochs):
        losses = []
        for idx in torch.randperm(len(states), generator=generator).split(batch):
            loss = (student.net(states[idx]) - targets[idx]).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return float(np.mean(losses))


@torch.no_grad()
def error(student, states: torch.Tensor, targets: torch.Tensor) -> float:
    return (student.net(states) - targets).square().mean().item()


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
                        help="std of the Gaussian noise added to the actions (in the action's own units) while "
                             "gathering states, so that they cover the actor's neighbourhood")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, least in (("rounds", 1), ("states", 1), ("epochs", 1), ("batch", 1), ("eval_episodes", 1)):
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}")
    if not args.learning_rate > 0 or not args.exploration_std >= 0:
        parser.error("--learning-rate must be > 0 and --exploration-std >= 0")
    torch.set_num_threads(1)
    try:
        teacher_cfg, teacher = load_policy(args.teacher, backend="reference")
        cfg = load_config(args.student, args.overrides)
        for role, side in (("teacher", teacher_cfg), ("student", cfg)):
            if side.algo != "ppo":
                raise SpikerlError(f"the {role} is a {side.algo} {'run' if role == 'teacher' else 'config'}; "
                                   "distillation takes PPO Gaussian policies")
            if side.network.draws_random_spikes:  # a random readout has no one action to learn or teach
                raise SpikerlError(f"the {role}'s network draws random input spikes; its actions are not deterministic")
        if cfg.env_id != teacher_cfg.env_id:
            raise SpikerlError(f"the teacher plays {teacher_cfg.env_id}, the student's config {cfg.env_id}")
        if cfg.env_kwargs != teacher_cfg.env_kwargs:
            raise SpikerlError(f"the teacher's env_kwargs {teacher_cfg.env_kwargs} differ from the student config's "
                               f"{cfg.env_kwargs}")
        if teacher.discrete:
            raise SpikerlError(f"the teacher acts in a discrete action space ({cfg.env_id}); distillation takes "
                               "Gaussian policies")
        torch.manual_seed(args.seed)
        env = make_env(cfg.env_id, "ppo", env_kwargs=cfg.env_kwargs)
        student = make_policy(cfg, env)
    except SpikerlError as exc:
        raise SystemExit(str(exc)) from None
    student.obs_norm = copy.deepcopy(teacher.obs_norm)  # the teacher's normalization, frozen
    student.eval()
    optimizer = torch.optim.Adam(student.net.parameters(), lr=args.learning_rate)
    generator = torch.Generator().manual_seed(args.seed)

    def evaluated(policy) -> dict:
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
        # seeds apart for each --seed's rounds, so that two --seed values never share a round's episodes
        states = visited_states(actor, env, args.states, args.seed * 1000 + round_, args.exploration_std)
        with torch.no_grad():
            normalized = teacher.obs_norm(torch.as_tensor(states))
            targets = teacher.deterministic(teacher.net(normalized))
        # On the states the student's own actions led to (DAgger's point): the error before and after it trains
        # on them
        before = error(student, normalized, targets)
        pooled_states.append(normalized)
        pooled_targets.append(targets)
        last_epoch = fit(student, torch.cat(pooled_states), torch.cat(pooled_targets), optimizer, args.epochs,
                         args.batch, generator)
        after = error(student, normalized, targets)
        result = evaluated(student)
        share = (f", {result['mean_return'] / teacher_eval['mean_return']:.2f} of the teacher"
                 if teacher_eval["mean_return"] > 0 else "")  # a ratio of negative returns reads backwards
        print(f"round {round_ + 1}: {sum(len(s) for s in pooled_states)} states; error on the round's new states "
              f"before training {before:.4f}, after {after:.4f}; the last epoch's mean loss (pooled) "
              f"{last_epoch:.4f}; mean return {result['mean_return']:.1f} (length {result['mean_length']:.0f})"
              f"{share} [{time.perf_counter() - start:.0f} s]", flush=True)
    env.close()


if __name__ == "__main__":
    main()
