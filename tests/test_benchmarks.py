"""The diagnostic scripts of benchmarks/ whose figures the docs cite."""

import re
import subprocess
import sys
from pathlib import Path

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
