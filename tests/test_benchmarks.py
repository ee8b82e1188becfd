"""The diagnostic scripts of benchmarks/ whose figures the docs cite."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikerl.config import load_config
from spikerl.rl import train_run
from spikerl.rl.run import Run

SMALL = ["env_id=spikerl/PointReach-v0", "network.hidden=[16, 16]"]


def test_distillation_teaches_the_student_its_teachers_actions(tmp_path):
    teacher = tmp_path / "teacher"
    cfg = load_config("configs/pendulum_ppo_ann.yaml", [
        *SMALL, "total_steps=512", "ppo.num_envs=1", "ppo.num_steps=256", "ppo.num_minibatches=4",
        "ppo.policy_output_scale=1.0", "eval.every=0",
        "eval.final_episodes=1", f"run_dir={teacher}", "progress=false"])
    train_run(cfg, Run(cfg))  # its output layer at full scale, so that its actions are not all near 0
    result = subprocess.run(
        [sys.executable, "benchmarks/distill_policy.py", str(teacher), "configs/pendulum_ppo_snn.yaml", *SMALL,
         "--rounds", "2", "--states", "400", "--epochs", "10", "--batch", "32", "--eval-episodes", "2"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    rounds = re.findall(r"round (\d+): (\d+) states; error on the round's new states before training ([\d.]+), "
                        r"after ([\d.]+); the last epoch's mean loss \(pooled\) ([\d.]+); mean return (-?[\d.]+)",
                        result.stdout)
    assert [(r[0], r[1]) for r in rounds] == [("1", "400"), ("2", "800")], result.stdout
    # the spiking student learns its teacher's actions on each round's states: from scratch, then on the states
    # its own actions led to (unchanged at a learning rate of 1e-12: equal before and after)
    (_, _, before_1, after_1, _, _), (_, _, before_2, after_2, _, _) = rounds
    assert float(after_1) < 0.2 * float(before_1), result.stdout
    assert float(after_2) < 0.5 * float(before_2), result.stdout
    # a student in another environment than its teacher's is refused in one line
    other = subprocess.run([sys.executable, "benchmarks/distill_policy.py", str(teacher), "configs/pendulum_ppo_snn.yaml"],
                           capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert other.returncode != 0
    assert other.stderr.strip().splitlines()[-1] == "the teacher plays spikerl/PointReach-v0, the student's config Pendulum-v1"


def test_adam_moments_give_each_tensors_step_as_a_share_of_the_learning_rate():
    spec = importlib.util.spec_from_file_location("adam_moments", "benchmarks/adam_moments.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    moment_rows = module.moment_rows

    steady, noisy = torch.nn.Parameter(torch.zeros(1, 3)), torch.nn.Parameter(torch.zeros(1, 3))
    optimizer = torch.optim.Adam([{"params": [steady]}, {"params": [noisy]}], lr=1e-3, eps=1e-5)
    for step in range(50):
        steady.grad = torch.full((1, 3), 1e-3)  # the same gradient every step: Adam's full step
        noisy.grad = torch.full((1, 3), 1e-3 * (-1) ** step)  # its mean is 0: steps far below the rate
        optimizer.step()
    rows = moment_rows(optimizer.state_dict(), "ppo", agent=None, adam_eps=None)
    assert [(label, shape, steps) for label, _, shape, steps, *_ in rows] == [("policy", (1, 3), 50), ("value", (1, 3), 50)]
    assert rows[0][4] == pytest.approx([1e-3] * 3)  # sqrt(v) at every quantile: the gradient's scale
    assert rows[0][5] == pytest.approx(1e-3 / (1e-3 + 1e-5))
    assert rows[1][5] < 0.1
    # At an eps equal to the gradient's scale the same moments step half as far
    assert moment_rows(optimizer.state_dict(), "ppo", None, adam_eps=1e-3)[0][5] == pytest.approx(0.5)
