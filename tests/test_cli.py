"""The spikerl command: bad input gets one clear line and a non-zero exit; train, eval and plot work."""

import json

import pytest
import torch

from spikerl.rl.evaluate import load_policy
from tests.conftest import newest_checkpoint

CARTPOLE = "configs/cartpole_dqn_snn.yaml"
PENDULUM = "configs/pendulum_td3_snn.yaml"


@pytest.mark.parametrize("args, message", [
    ([CARTPOLE, "network.neuron.alpha=1.5"], "network.neuron.alpha must be in [0, 1]"),
    ([CARTPOLE, "network.neuron.theta=0"], "network.neuron.theta must be > 0"),
    ([CARTPOLE, "network.timesteps=0"], "network.timesteps (T) must be >= 1"),
    ([CARTPOLE, "env_id=CartPol-v1"], "unknown environment 'CartPol-v1'; did you mean CartPole-v1"),
    ([PENDULUM, "env_id=CartPole-v1"], "TD3 needs continuous actions"),
    ([CARTPOLE, "env_id=Pendulum-v1"], "DQN needs discrete actions"),
    (["configs/no_such_file.yaml"], "config file not found: configs/no_such_file.yaml"),
    ([CARTPOLE, "algo=sac"], "algo must be one of dqn, td3"),
    ([CARTPOLE, "keep_checkpoints=0"], "keep_checkpoints must be >= 1"),
    (["--resume", "runs/no-such-run"], "cannot resume runs/no-such-run: run folder not found"),
])
def test_bad_input_is_one_clear_line(cli, tmp_path, args, message):
    result = cli("train", *args, f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikerl: error: ")
    assert message in lines[0]
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two seeds of a short spiking DQN run with checkpoints and evaluations."""
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for seed in (0, 1):
        run_dir = root / f"s{seed}"
        result = run_cli("train", CARTPOLE, "total_steps=1500", "eval.every=500", "eval.episodes=2",
                         "eval.final_episodes=3", "checkpoint_every=1000", f"seed={seed}", f"run_dir={run_dir}",
                         "network.neuron.randomize=normal")
        assert result.returncode == 0, result.stderr
        assert "final evaluation (3 deterministic episodes" in result.stdout
        dirs.append(run_dir)
    return dirs


def test_run_folder_holds_everything(tiny_runs):
    run = tiny_runs[0]
    for name in ("config.yaml", "episodes.csv", "eval.csv", "final_model.pt", "final_eval.json"):
        assert (run / name).is_file(), name
    # checkpoint_every=1000: taken at the first episode end at or after step 1000
    (checkpoint,) = (run / "checkpoints").glob("step_*.pt")
    step = int(checkpoint.stem[5:])
    assert step >= 1000 and str(step) in [row.split(",")[0] for row in (run / "episodes.csv").read_text().splitlines()]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    evals = (run / "eval.csv").read_text().splitlines()
    assert evals[0] == "global_step,mean_return,std_return,min_return,max_return"
    assert [row.split(",")[0] for row in evals[1:]] == ["500", "1000", "1500", "1500"]
    final = json.loads((run / "final_eval.json").read_text())
    assert final["episodes"] == 3 and len(final["returns"]) == 3 and final["global_step"] == 1500


def test_target_network_holds_the_online_networks_random_draw(tiny_runs):
    ckpt = newest_checkpoint(tiny_runs[0])
    online, target = ckpt["components"]["q_net"], ckpt["components"]["target_net"]
    theta = online["net.neurons.0.membrane.theta_fixed"]
    assert theta.unique().numel() > 1  # really drawn per neuron
    for key in online:
        if ".membrane." in key:
            assert torch.equal(online[key], target[key]), key


def test_eval_is_deterministic_and_writes_json(cli, tiny_runs, tmp_path):
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    r1 = cli("eval", str(tiny_runs[0]), "--episodes", "3", "-o", str(out1))
    r2 = cli("eval", str(tiny_runs[0]), "--episodes", "3", "-o", str(out2))
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr
    a, b = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert a["returns"] == b["returns"]
    # The same seeds as the run's final evaluation: the same returns.
    assert a["returns"] == json.loads((tiny_runs[0] / "final_eval.json").read_text())["returns"]


def test_eval_from_a_checkpoint(cli, tiny_runs):
    result = cli("eval", str(tiny_runs[0]), "--episodes", "1", "--checkpoint",
                 str(next((tiny_runs[0] / "checkpoints").glob("step_*.pt"))), "-o", "/dev/null")
    assert result.returncode == 0, result.stderr


def test_eval_bad_input(cli, tiny_runs, tmp_path):
    result = cli("eval", str(tmp_path / "missing"))
    assert result.returncode == 2 and "run folder not found" in result.stderr and "Traceback" not in result.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "final_model.pt").write_bytes((tiny_runs[0] / "final_model.pt").read_bytes()[:300])
    result = cli("eval", str(broken))
    assert result.returncode == 2 and "is corrupt" in result.stderr and "Traceback" not in result.stderr


def test_loaded_policy_acts_like_the_trained_one(tiny_runs):
    cfg, policy = load_policy(tiny_runs[1])
    assert cfg.seed == 1 and cfg.network.kind == "snn"
    assert policy.act([0.0, 0.0, 0.0, 0.0]) in (0, 1)


def test_plot_writes_a_png_with_seed_band(cli, tiny_runs, tmp_path):
    out = tmp_path / "curves.png"
    result = cli("plot", *map(str, tiny_runs), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_run_folder_is_never_overwritten(cli, tiny_runs):
    result = cli("train", CARTPOLE, f"run_dir={tiny_runs[0]}", "total_steps=10")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (tiny_runs[0] / "final_model.pt").is_file()


def test_td3_target_actor_holds_the_actors_random_draw(cli, tmp_path):
    run_dir = tmp_path / "td3"
    result = cli("train", PENDULUM, "total_steps=300", "td3.learning_starts=100", "checkpoint_every=200",
                 "eval.every=0", "eval.final_episodes=1", "network.hidden=[32, 32]", "td3.critic.hidden=[32, 32]",
                 "network.neuron.randomize=uniform", "network.neuron.spread=0.3", f"run_dir={run_dir}")
    assert result.returncode == 0, result.stderr
    ckpt = newest_checkpoint(run_dir)
    actor, target = ckpt["components"]["actor"], ckpt["components"]["actor_target"]
    assert actor["net.neurons.1.membrane.beta_fixed"].unique().numel() > 1
    for key in actor:
        if ".membrane." in key or "max_abs" in key:
            assert torch.equal(actor[key], target[key]), key
    # The weights have moved apart by now (soft updates), so the comparison above is not vacuous.
    assert not torch.equal(actor["net.layers.0.weight"], target["net.layers.0.weight"])


def test_summary_tables_runs_by_variant(cli, tiny_runs):
    result = cli("summary", *map(str, tiny_runs))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| variant | seed | steps | final eval return")
    assert len(lines) == 2 + 2 + 1  # header, two runs, one variant mean
    assert "CartPole-v1 DQN SNN, mean of 2" in lines[-1]


def test_eval_in_an_incompatible_environment_is_refused(cli, tiny_runs):
    result = cli("eval", str(tiny_runs[0]), "--env", "Acrobot-v1", "-o", "/dev/null")
    assert result.returncode == 2 and "other observation or action spaces" in result.stderr
    assert "Traceback" not in result.stderr
