"""Runs that survive: kill and resume, corrupt checkpoints, divergence stops, determinism, space checks."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control import CartPoleEnv

from spikerl import cli as spikerl_cli
from spikerl.rl.checkpoint import load_checkpoint, write_checkpoint
from spikerl.errors import CheckpointFormatError, SpikerlError
from tests.conftest import ROOT, run_cli, tensorboard_scalars

# Small but real: both agents learn (their weights move every few steps), take several checkpoints
# at episode ends and evaluate periodically, in about 10-20 s each on one core.
RUNS = {
    "dqn": [str(ROOT / "configs/cartpole_dqn_snn.yaml"), "total_steps=3000", "network.hidden=[32, 32]",
            "dqn.learning_starts=300", "dqn.batch_size=32", "checkpoint_every=400", "eval.every=1000",
            "eval.episodes=2", "eval.final_episodes=3", "network.neuron.randomize=normal", "progress=false", "threads=1"],
    "td3": [str(ROOT / "configs/pendulum_td3_snn.yaml"), "env_id=spikerl/PointReach-v0", "total_steps=1600",
            "td3.learning_starts=300", "td3.batch_size=32", "network.hidden=[32, 32]", "td3.critic.hidden=[32, 32]",
            "checkpoint_every=200", "eval.every=400", "eval.episodes=2", "eval.final_episodes=3", "progress=false",
            "threads=1"],
    "sac": [str(ROOT / "configs/pendulum_sac_snn.yaml"), "env_id=spikerl/PointReach-v0", "total_steps=1600",
            "sac.learning_starts=300", "sac.batch_size=32", "network.hidden=[32, 32]", "sac.critic.hidden=[32, 32]",
            "checkpoint_every=200", "eval.every=400", "eval.episodes=2", "eval.final_episodes=3", "progress=false",
            "threads=1"],
    # Two environments per agent, rollouts of 2 x 100 steps: checkpoints at rollout ends, every environment
    # mid-episode (PointReach's episodes last 40 steps; time limits bootstrap).
    "ppo": [str(ROOT / "configs/pendulum_ppo_snn.yaml"), "env_id=spikerl/PointReach-v0", "total_steps=2000",
            "ppo.num_envs=2", "ppo.num_steps=100", "ppo.num_minibatches=4", "ppo.update_epochs=2",
            "network.hidden=[32, 32]", "ppo.critic.hidden=[32, 32]", "network.neuron.randomize=normal",
            "checkpoint_every=400", "eval.every=500", "eval.episodes=2", "eval.final_episodes=3", "progress=false",
            "threads=1"],
}
# The adaptive KL schedule's per-agent learning rates are part of what a checkpoint holds (and the value's
# rate is still annealed after a resume), as is the log-std's own Adam group.
RUNS["ppo-adaptive-kl"] = [*RUNS["ppo"], "ppo.desired_kl=0.01"]
RUNS["ppo-log-std-rate"] = [*RUNS["ppo-adaptive-kl"], "ppo.log_std_learning_rate=3e-4"]
RUNS["ppo-policy-target-kl"] = [*RUNS["ppo"], "ppo.update_epochs=4", "ppo.policy_target_kl=0.005"]
ALGOS = list(RUNS)


def train_args(algo: str, run_dir: Path) -> list[str]:
    return ["train", *RUNS[algo], f"run_dir={run_dir}"]


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """One uninterrupted run per algorithm: what every interrupted run must end up equal to."""
    root = tmp_path_factory.mktemp("reference")
    for algo in RUNS:
        result = run_cli(*train_args(algo, root / algo))
        assert result.returncode == 0, result.stderr
    return root


def assert_same_run(a: Path, b: Path) -> None:
    for name in ("episodes.csv", "eval.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    final_a, final_b = load_checkpoint(a / "final_model.pt")["policy"], load_checkpoint(b / "final_model.pt")["policy"]
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key
    eval_a, eval_b = (json.loads((d / "final_eval.json").read_text()) for d in (a, b))
    assert eval_a["returns"] == eval_b["returns"] and eval_a["train_episodes"] == eval_b["train_episodes"]


def start_and_kill(args: list[str], run_dir: Path, ready) -> bool:
    """Start `spikerl ARGS`, SIGKILL it as soon as ready(run_dir) holds; False if it finished first."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "spikerl.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and not ready(run_dir):
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.02)
        if proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True
    finally:
        if proc.poll() is None:
            proc.kill()


def episode_rows(run_dir: Path) -> int:
    path = run_dir / "episodes.csv"
    return max(len(path.read_text().splitlines()) - 1, 0) if path.exists() else 0


def checkpoint_count(run_dir: Path) -> int:
    return len(list((run_dir / "checkpoints").glob("step_*.pt"))) if (run_dir / "checkpoints").exists() else 0


@pytest.mark.parametrize("algo", ALGOS)
def test_same_config_and_seed_give_identical_metric_files(algo, reference_runs, tmp_path):
    result = run_cli(*train_args(algo, tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    assert_same_run(reference_runs / algo, tmp_path / "again")
    # ...and the run is not trivially constant: another seed gives other rows.
    other = run_cli(*train_args(algo, tmp_path / "seed1"), "seed=1")
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "seed1" / "episodes.csv").read_text() != (tmp_path / "again" / "episodes.csv").read_text()


@pytest.mark.parametrize("algo", ALGOS)
def test_sigkill_at_a_random_point_then_resume_equals_the_uninterrupted_run(algo, reference_runs, tmp_path):
    total_episodes = episode_rows(reference_runs / algo)
    # A seeded kill point: the same on every run of the suite; SPIKERL_KILL_SEED picks others to explore.
    seed = int(os.environ.get("SPIKERL_KILL_SEED", "20261128")) + ALGOS.index(algo)
    kill_after = random.Random(seed).randint(1, total_episodes - 1)
    run_dir = tmp_path / "killed"
    killed = start_and_kill(train_args(algo, run_dir), run_dir, lambda d: episode_rows(d) >= kill_after)
    assert killed, f"the run finished before the kill point (episode {kill_after} of {total_episodes}, seed {seed})"
    assert not (run_dir / "final_eval.json").exists()

    result = run_cli("train", "--resume", str(run_dir))
    assert result.returncode == 0, f"kill after episode {kill_after} (seed {seed}): {result.stderr}"
    assert "resuming" in result.stderr or "no checkpoint yet" in result.stderr
    assert_same_run(reference_runs / algo, run_dir)

    # TensorBoard hides what the killed process logged past its checkpoint: one point per episode.
    steps = [step for step, _ in tensorboard_scalars(run_dir, "charts/episodic_return")]
    csv_steps = [int(row.split(",")[0]) for row in (run_dir / "episodes.csv").read_text().splitlines()[1:]]
    assert steps == csv_steps

    again = run_cli("train", "--resume", str(run_dir))
    assert again.returncode == 0 and "finished already" in again.stderr


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(reference_runs, tmp_path):
    run_dir = tmp_path / "corrupt"
    assert start_and_kill(train_args("dqn", run_dir), run_dir, lambda d: checkpoint_count(d) >= 2)
    newest, previous = sorted((run_dir / "checkpoints").glob("step_*.pt"), key=lambda p: -int(p.stem[5:]))[:2]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the payload
    newest.write_bytes(bytes(data))
    stale = run_dir / "checkpoints" / f".{newest.name}.tmp-12345"  # as a kill in the middle of a write leaves it
    stale.write_bytes(b"half a checkpoint")

    result = run_cli("train", "--resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert f"{newest} is corrupt: its SHA-256 checksum does not match" in result.stderr
    assert f"resuming {run_dir} from {previous.name}" in result.stderr
    assert (run_dir / "checkpoints" / (newest.name + ".corrupt")).is_file()  # kept aside, not deleted
    assert not stale.exists()
    assert_same_run(reference_runs / "dqn", run_dir)


def test_checkpoint_damage_is_detected_with_a_clear_message(tmp_path):
    path = tmp_path / "step_5.pt"
    write_checkpoint({"step": 5, "weights": torch.arange(1000.0)}, path)
    assert torch.equal(load_checkpoint(path)["weights"], torch.arange(1000.0))
    good = path.read_bytes()

    path.write_bytes(good[: len(good) - 100])
    with pytest.raises(SpikerlError, match=r"is corrupt: truncated \(\d+ of \d+ bytes\)"):
        load_checkpoint(path)
    path.write_bytes(good.replace(b'"format": 5', b'"format": 9'))
    with pytest.raises(CheckpointFormatError, match="has format 9, written by a newer spikerl; this spikerl reads "
                                                    "formats 4, 5 \\(the file is intact"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(SpikerlError, match="no spikerl header"):
        load_checkpoint(path)
    with pytest.raises(SpikerlError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_failed_checkpoint_write_keeps_the_previous_one(monkeypatch, tmp_path, capsys):
    written = []

    def disk_full_on_second(obj, path):
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_checkpoint(obj, path)
        written.append(path)

    monkeypatch.setattr("spikerl.rl.run.write_checkpoint", disk_full_on_second)
    run_dir = tmp_path / "full"
    assert spikerl_cli.main(train_args("dqn", run_dir)) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("spikerl: network.backend auto ->")]  # said once per process
    assert len(err) == 2 and err[0].startswith("run folder")
    assert "could not write checkpoint" in err[1] and "No space left on device" in err[1]
    assert f"the previous checkpoint {written[0]} is intact" in err[1]
    assert load_checkpoint(written[0])["step"] >= 400
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [written[0].name]  # no temporary left over


def test_too_little_disk_space_is_reported_before_training(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("spikerl.rl.run.shutil.disk_usage", lambda path: type("Usage", (), {"free": 2**20})())
    run_dir = tmp_path / "small"
    assert spikerl_cli.main(train_args("td3", run_dir) + ["td3.buffer_size=100000"]) == 2
    err = capsys.readouterr().err
    assert "has 1 MiB free, but this run's checkpoints need about" in err and "Traceback" not in err
    assert not (run_dir / "episodes.csv").exists()  # not one step was trained


def test_an_unwritable_run_folder_is_reported_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli(*train_args("dqn", blocker / "run"))
    assert result.returncode == 2 and "cannot write to run folder" in result.stderr
    assert "Traceback" not in result.stderr


class NaNRewardCartPole(CartPoleEnv):
    """CartPole whose reward turns NaN after 500 steps: a broken environment or reward function."""

    steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        NaNRewardCartPole.steps += 1
        return obs, float("nan") if NaNRewardCartPole.steps > 500 else reward, terminated, truncated, info


def test_a_nan_loss_stops_the_run_naming_the_step_and_the_last_good_checkpoint(tmp_path, capsys):
    gym.register("tests/NaNRewardCartPole-v0", entry_point=NaNRewardCartPole, max_episode_steps=500)
    NaNRewardCartPole.steps = 0
    run_dir = tmp_path / "nan"
    code = spikerl_cli.main(train_args("dqn", run_dir) + ["env_id=tests/NaNRewardCartPole-v0", "dqn.train_every=1",
                                                          "checkpoint_every=200"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("spikerl: error: training diverged at step ")
    assert "losses/td_loss is nan; stopped without saving it; the last good checkpoint is " in err[-1]
    diverged = json.loads((run_dir / "diverged.json").read_text())
    assert diverged["global_step"] > 500
    good = load_checkpoint(Path(diverged["last_good_checkpoint"]))
    assert good["step"] <= 500 and f"step_{good['step']}.pt (step {good['step']})" in err[-1]
    assert all(torch.isfinite(t).all() for t in good["components"]["q_net"].values() if t.is_floating_point())
    assert not (run_dir / "final_model.pt").exists()
    # spikerl summary says the run diverged, rather than asking whether it finished
    assert spikerl_cli.main(["summary", str(run_dir)]) == 2
    message = capsys.readouterr().err.strip()
    assert message == (f"spikerl: error: {run_dir} diverged at step {diverged['global_step']} (losses/td_loss is nan) "
                       "and has no final evaluation; leave it out of the summary"), message


def test_a_nan_ppo_loss_stops_the_run_at_the_update_that_met_it(tmp_path, capsys):
    """PPO's rollout holds the NaN rewards; the update after it stops the run, whose last good checkpoint is the
    rollout boundary before."""
    if "tests/NaNRewardCartPole-v0" not in gym.registry:
        gym.register("tests/NaNRewardCartPole-v0", entry_point=NaNRewardCartPole, max_episode_steps=500)
    NaNRewardCartPole.steps = 0
    run_dir = tmp_path / "nan"
    code = spikerl_cli.main(["train", str(ROOT / "configs/cartpole_ppo_snn.yaml"), "env_id=tests/NaNRewardCartPole-v0",
                             "total_steps=2048", "ppo.num_envs=2", "ppo.num_steps=128", "network.hidden=[16, 16]",
                             "checkpoint_every=256", "eval.every=0", "progress=false", "threads=1", f"run_dir={run_dir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "losses/loss is nan; stopped without saving it; the last good checkpoint is " in err[-1]
    diverged = json.loads((run_dir / "diverged.json").read_text())
    # Two environments: the 501st environment step is global step 502, in the rollout of steps 257-512.
    assert diverged["global_step"] == 512
    good = load_checkpoint(Path(diverged["last_good_checkpoint"]))
    assert good["step"] == 256
    assert all(torch.isfinite(t).all() for t in good["components"]["actor"].values() if t.is_floating_point())
    assert not (run_dir / "final_model.pt").exists()


def test_resume_refuses_changes_that_would_rewrite_the_past(reference_runs, cli):
    result = cli("train", "--resume", str(reference_runs / "dqn"), "network.neuron.theta=0.3")
    assert result.returncode == 2 and "cannot change network.neuron.theta when resuming" in result.stderr
    result = cli("train", "--resume", str(reference_runs / "missing"))
    assert result.returncode == 2 and "run folder not found" in result.stderr


def test_replay_buffer_state_round_trips():
    from spikerl.rl.replay import ReplayBuffer

    buffer = ReplayBuffer(5, 2, (1,))
    for i in range(7):
        buffer.add([i, -i], [i], float(i), [i + 1, 0], i == 6)
    copy = ReplayBuffer(5, 2, (1,))
    copy.load_state_dict(buffer.state_dict())
    assert (copy.position, copy.size) == (2, 5)
    for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
        assert np.array_equal(getattr(copy, name), getattr(buffer, name)), name
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(6, 2, (1,)).load_state_dict(buffer.state_dict())


def test_a_run_folder_in_use_is_not_resumed_by_a_second_process(tmp_path):
    run_dir = tmp_path / "busy"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, "-m", "spikerl.cli", *train_args("dqn", run_dir), "total_steps=100000"],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while episode_rows(run_dir) < 1:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        result = run_cli("train", "--resume", str(run_dir))
        assert result.returncode == 2
        assert f"run folder {run_dir} is in use by spikerl process {first.pid}" in result.stderr
    finally:
        first.kill()
        first.wait()
    # Killed, the lock goes with the process: now the run resumes (and is cut short here by a new total).
    result = run_cli("train", "--resume", str(run_dir), "total_steps=500")
    assert result.returncode == 0, result.stderr


def test_a_checkpoint_of_another_format_version_stops_the_resume_and_is_kept(reference_runs, tmp_path):
    """Not corruption: one error naming both versions, and no file is renamed or set aside."""
    import shutil

    run_dir = tmp_path / "older"
    shutil.copytree(reference_runs / "dqn", run_dir)
    for name in ("final_eval.json", "final_model.pt"):
        (run_dir / name).unlink()  # as if killed before the end
    newest = max((run_dir / "checkpoints").glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
    newest.write_bytes(newest.read_bytes().replace(b'{"format": 5,', b'{"format": 3,', 1))
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    result = run_cli("train", "--resume", str(run_dir))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"checkpoint {newest} has format 3, written by an older spikerl; this spikerl reads formats 4, 5" \
        in result.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("algo", ["dqn", "td3", "ppo", "ppo-adaptive-kl"])
def test_a_population_killed_mid_episode_resumes_to_the_uninterrupted_population(algo, tmp_path):
    """`train --seeds 0:3` SIGKILLed after its second checkpoint (every agent mid-episode: CartPole's and
    PointReach's episodes do not end on the checkpoint steps) resumes, by replaying each agent's episode, to
    the files of the uninterrupted population. DQN's seed 1 also equals its run alone file for file (TD3's
    continuous actions carry the batched products' rounding, 1e-7, into its returns' last digits)."""
    args = [*train_args(algo, tmp_path / "whole"), "--seeds", "0:3"]
    assert run_cli(*args).returncode == 0
    killed = tmp_path / "killed"
    assert start_and_kill([*train_args(algo, killed), "--seeds", "0:3"], killed,
                          lambda d: checkpoint_count(d) >= 2 and episode_rows(d / "s2") > 0)
    resumed = run_cli("train", "--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "3 agents: mean final return" in resumed.stdout
    for seed in range(3):
        assert_same_run(tmp_path / "whole" / f"s{seed}", killed / f"s{seed}")
    if algo == "dqn":
        assert run_cli(*train_args(algo, tmp_path / "alone"), "seed=1").returncode == 0
        assert_same_run(tmp_path / "alone", killed / "s1")
    again = run_cli("train", "--resume", str(killed))
    assert again.returncode == 0 and "every agent finished already" in again.stderr
