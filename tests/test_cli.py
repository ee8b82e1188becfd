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
    # MuJoCo's warning about Gymnasium's own half_cheetah.xml no longer rides along with the message
    ([CARTPOLE, "env_id=HalfCheetah-v5"], "DQN needs discrete actions"),
    (["configs/pendulum_sac_snn.yaml", "env_id=CartPole-v1"], "SAC needs continuous actions"),
    (["configs/cartpole_ppo_snn.yaml", "ppo.log_std_learning_rate=1e-3"],
     "ppo.log_std_learning_rate is for continuous actions; CartPole-v1 has discrete actions"),
    (["configs/pendulum_ppo_snn.yaml", "ppo.policy_target_kl=0"], "ppo.policy_target_kl must be > 0, got 0"),
    (["configs/pendulum_ppo_snn.yaml", "ppo.policy_target_kl=0.03", "ppo.update_epochs=1"],
     "ppo.policy_target_kl stops the policy between epochs; it needs ppo.update_epochs >= 2"),
    (["configs/pendulum_ppo_snn.yaml", "ppo.policy_kl_check=minibatch"],
     "ppo.policy_kl_check=minibatch says where ppo.policy_target_kl is checked; set ppo.policy_target_kl"),
    (["configs/walker2d_ppo_snn.yaml", "ppo.policy_kl_check=minibatch", "ppo.policy_num_minibatches=8"],
     "ppo.policy_kl_check=minibatch checks the KL before every policy step; it does not combine with fewer"),
    (["configs/pendulum_ppo_snn.yaml", "ppo.policy_target_kl=0.03", "ppo.policy_kl_check=minibatch",
      "ppo.update_epochs=1", "ppo.num_minibatches=1"],
     "ppo.policy_kl_check=minibatch never checks an update's first step; it needs more than one"),
    (["configs/pendulum_ppo_snn.yaml", "ppo.policy_target_kl=0.03", "ppo.desired_kl=0.01"],
     "ppo.policy_target_kl and ppo.desired_kl both bound the policy's KL per update; set one of them"),
    ([PENDULUM, "td3.critic.normalize_obs=true"],
     "td3.critic.normalize_obs is not read: a critic reads the observations as its actor's normalizer gives them"),
    (["configs/pendulum_ppo_snn.yaml", "ppo.critic.obs_clip=5"], "ppo.critic.obs_clip is not read"),
    (["configs/no_such_file.yaml"], "config file not found: configs/no_such_file.yaml"),
    ([CARTPOLE, "algo=a2c"], "algo must be one of dqn, td3, sac, ppo"),
    ([CARTPOLE, "keep_checkpoints=0"], "keep_checkpoints must be >= 1"),
    ([CARTPOLE, "total_episodes=0"], "total_episodes must be >= 1"),
    (["--resume", "runs/no-such-run"], "cannot resume runs/no-such-run: run folder not found"),
    ([CARTPOLE, "device=banana"], "device must be auto, cpu, cuda or cuda:N; got 'banana'"),
    ([CARTPOLE, "network.backend=fast"], "network.backend must be one of auto, reference, fused, native, compiled"),
    ([CARTPOLE, "env_kwargs.gravity=3"], "environment CartPole-v0 refused env_kwargs {'gravity': 3}: TypeError: "
                                         "CartPoleEnv.__init__() got an unexpected keyword argument 'gravity'"),
    # a value the environment builds with but cannot step with: refused before the run starts, not mid-run
    ([PENDULUM, "env_kwargs.g=abc"], "environment Pendulum-v1 refused env_kwargs {'g': 'abc'}: TypeError: "),
    ([CARTPOLE, "env_kwargs=[1]"], "env_kwargs must be a mapping of names to values, got [1]"),
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
    # checkpoint_every=1000: taken at step 1000, mid-episode or not
    assert [p.name for p in (run / "checkpoints").glob("step_*.pt")] == ["step_1000.pt"]
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
    for command, args, message in (("eval", ["--episodes", "0"], "--episodes must be >= 1, got 0"),
                                   ("eval", ["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
                                   ("energy", ["--episodes", "0"], "--episodes must be >= 1, got 0"),
                                   ("energy", ["--raster-decisions", "0"], "--raster-decisions must be >= 1, got 0"),
                                   ("energy", ["--e-ac", "0"], "--e-ac is an energy per operation in pJ and must be > 0"),
                                   ("video", ["--seed", str(2**64)], "--seed must be in [0, 4294967295]")):
        result = cli(command, str(tiny_runs[0]), *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_loaded_policy_acts_like_the_trained_one(monkeypatch, tmp_path):
    """The policy `load_policy` rebuilds from final_model.pt gives the trained network's Q-values and actions
    on the same observations, on the backend it trained with and on another."""
    from spikerl.config import load_config
    from spikerl.rl import train_run
    from spikerl.rl.loop import TrainingLoop
    from spikerl.rl.run import Run

    trained = {}
    finish = TrainingLoop.finish

    def keep_the_network(self, step):
        trained["q_net"] = self.components["q_net"]  # stacked: a population of one
        return finish(self, step)

    monkeypatch.setattr(TrainingLoop, "finish", keep_the_network)
    cfg = load_config(CARTPOLE, ["total_steps=600", "dqn.learning_starts=100", "dqn.batch_size=16", "eval.every=0",
                                 "eval.final_episodes=1", "network.neuron.randomize=normal", "network.backend=native",
                                 f"run_dir={tmp_path / 'run'}", "progress=false", "seed=1"])
    train_run(cfg, Run(cfg))
    observations = torch.randn(200, 4) * torch.tensor([1.0, 1.0, 0.1, 1.0])
    with torch.no_grad():
        expected = trained["q_net"](observations.unsqueeze(0))[0]
    assert expected.argmax(dim=1).unique().numel() == 2  # both actions occur: comparing them means something
    for backend in ("native", "reference"):
        loaded_cfg, policy = load_policy(tmp_path / "run", backend=backend)
        assert loaded_cfg.seed == 1 and policy.net.backend == backend
        with torch.no_grad():
            assert torch.equal(policy(observations), expected), backend
        assert [policy.act(o.numpy()) for o in observations] == expected.argmax(dim=1).tolist()


def test_a_run_trained_on_native_evaluates_and_exports_on_reference(cli, tmp_path):
    run_dir = tmp_path / "native"
    result = cli("train", CARTPOLE, "total_steps=800", "dqn.learning_starts=100", "eval.every=0",
                 "eval.final_episodes=3", "network.backend=native", f"run_dir={run_dir}")
    assert result.returncode == 0, result.stderr
    trained = json.loads((run_dir / "final_eval.json").read_text())
    assert trained["backends"] == {"q_net": "native"}
    result = cli("eval", str(run_dir), "--episodes", "3", "--backend", "reference", "-o", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["returns"] == trained["returns"]
    pytest.importorskip("nir")
    result = cli("export", str(run_dir), "--backend", "reference", "-o", str(tmp_path / "p.nir"))
    assert result.returncode == 0 and "CubaLIF layers" in result.stdout, result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_one_line_before_anything_starts(cli, tmp_path):
    result = cli("train", CARTPOLE, "device=cuda", f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "spikerl: error: device cuda asked for, but this machine has no usable CUDA device "
        f"(PyTorch {torch.__version__}); use device=cpu or device=auto"]
    assert not (tmp_path / "run").exists()


def test_python_dash_m_spikerl_is_the_command():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "spikerl", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "spikerl" in result.stdout and "train" in result.stdout


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
    assert "CartPole-v0 DQN SNN, mean of 2" in lines[-1]


def test_summary_and_plot_keep_runs_that_differ_in_a_setting_apart(cli, tiny_runs, tmp_path):
    import shutil

    import yaml

    from spikerl.plot import read_run_settings, variant_labels

    def variant(name: str, **changes):
        run_dir = tmp_path / name
        shutil.copytree(tiny_runs[1], run_dir)
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        for dotted, value in changes.items():
            node = cfg
            *sections, key = dotted.split("__")
            for section in sections:
                node = node.setdefault(section, {})
            node[key] = value
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
        return run_dir

    timesteps = yaml.safe_load((tiny_runs[0] / "config.yaml").read_text())["network"]["timesteps"]
    longer = variant("longer", network__timesteps=timesteps + 3)
    kwargs = variant("kwargs", env_kwargs__sutton_barto_reward=True)
    # Another machine: its device and backend resolved there; kept and logged differently...
    # ...and settings its training never reads: another algorithm's, the unused population encoder's, the ANN's.
    elsewhere = variant("elsewhere", device="cuda:0", network__backend="fused", threads=1, checkpoint_every=7,
                        progress=False, run_dir="elsewhere", td3__gamma=0.5, network__population_std=0.15,
                        network__activation="tanh")
    older = variant("older", network__inference="fast")  # a setting an older spikerl had
    as_string = variant("as_string", env_kwargs__sutton_barto_reward="True")
    encoded = variant("encoded", network__encoder="population")
    labels = variant_labels([read_run_settings(d) for d in [*tiny_runs, longer, kwargs, elsewhere, older, as_string,
                                                            encoded]])
    assert labels[0] == labels[1] == labels[4]  # seeds and bookkeeping alone share a variant
    assert len(set(labels)) == 6
    # Each variant is named by where it departs from the most common value of each setting.
    assert labels[0] == "CartPole-v0 DQN SNN"
    assert labels[2] == f"CartPole-v0 DQN SNN, network.timesteps={timesteps + 3}"
    assert labels[3] == "CartPole-v0 DQN SNN, env_kwargs.sutton_barto_reward=true"
    assert labels[5] == "CartPole-v0 DQN SNN, network.inference=fast"
    assert labels[6] == "CartPole-v0 DQN SNN, env_kwargs.sutton_barto_reward='True'"
    # The settings the population encoder switches on count only among runs that have one.
    assert labels[7] == "CartPole-v0 DQN SNN, network.encoder=population"
    # A string that reads like more of a label is quoted, so two variants never print alike.
    base = {"env_id": "E-v0", "algo": "ppo", "network.kind": "snn"}
    tricky = [{"a": 0, "b": "X"}] * 3 + [{"a": "1, b=2", "b": "X"}, {"a": 1, "b": 2}, {"b": "X"}, {"a": "(unset)", "b": "X"}]
    assert len(set(variant_labels([{**base, **run} for run in tricky]))) == 5
    # With the longer run as the common case, the others are named by its setting.
    assert variant_labels([read_run_settings(d) for d in [longer, tiny_runs[0]]])[1] == (
        f"CartPole-v0 DQN SNN, network.timesteps={timesteps}")

    result = cli("summary", *map(str, [*tiny_runs, longer, elsewhere]))
    assert result.returncode == 0, result.stderr
    means = [line for line in result.stdout.splitlines() if "mean of" in line]
    assert [m.split(", mean of ")[0].strip("| *") for m in means] == [
        "CartPole-v0 DQN SNN", f"CartPole-v0 DQN SNN, network.timesteps={timesteps + 3}"]
    assert [m.split(", mean of ")[1][0] for m in means] == ["3", "1"]
    assert cli("plot", *map(str, [*tiny_runs, longer]), "-o", str(tmp_path / "curves.png")).returncode == 0

    (kwargs / "config.yaml").write_text("- 1\n")
    result = cli("summary", *map(str, [*tiny_runs, kwargs]))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"spikerl: error: {kwargs / 'config.yaml'} does not hold a spikerl config (a mapping of settings)"]


def test_total_episodes_stops_at_that_episode_end(cli, tmp_path):
    run_dir = tmp_path / "run"
    result = cli("train", CARTPOLE, "env_id=CartPole-v0", "total_episodes=4", "eval.every=0", "eval.final_episodes=1",
                 f"run_dir={run_dir}", "progress=false")
    assert result.returncode == 0, result.stderr
    rows = (run_dir / "episodes.csv").read_text().strip().splitlines()[1:]
    final = json.loads((run_dir / "final_eval.json").read_text())
    assert len(rows) == 4 and final["train_episodes"] == 4
    assert final["global_step"] == int(rows[-1].split(",")[0]) < 1000  # stopped there, far before total_steps
    assert final["best_train_average"] is None  # fewer than 100 episodes: no 100-episode average


@pytest.mark.parametrize("config, learns_after", [("configs/cartpole_ppo_snn.yaml", "total_steps=512"),
                                                  (CARTPOLE, "total_steps=200")])  # learning_starts 128
def test_a_run_that_ends_before_its_first_update_says_its_policy_is_untrained(cli, tmp_path, config, learns_after):
    notice = "before the first update: final_model.pt holds the untrained policy"
    common = ["eval.every=0", "eval.final_episodes=1", "network.hidden=[16, 16]", "progress=false"]
    ended = cli("train", config, "total_episodes=1", *common, f"run_dir={tmp_path / 'ended'}")  # within PPO's rollout
    assert ended.returncode == 0 and notice in ended.stdout, ended.stderr
    trained = cli("train", config, learns_after, *common, f"run_dir={tmp_path / 'trained'}")
    assert trained.returncode == 0 and notice not in trained.stdout + trained.stderr, trained.stderr


def test_env_kwargs_reach_every_environment_the_run_makes(cli, tmp_path):
    # CartPole's Sutton-Barto reward pays 0 per step and -1 at the fall; the default pays +1 per step (>= 8 per
    # episode), so every return says which environment was made.
    run_dir = tmp_path / "run"
    result = cli("train", CARTPOLE, "env_kwargs.sutton_barto_reward=true", "total_steps=300", "dqn.learning_starts=100",
                 "eval.every=200", "eval.episodes=2", "eval.final_episodes=2", f"run_dir={run_dir}",
                 "network.hidden=[16, 16]", "progress=false")
    assert result.returncode == 0, result.stderr
    rows = (run_dir / "episodes.csv").read_text().strip().splitlines()[1:]
    assert rows and all(-1 <= float(row.split(",")[1]) <= 0 for row in rows)  # training
    evals = (run_dir / "eval.csv").read_text().strip().splitlines()[1:]
    assert evals and all(-1 <= float(row.split(",")[1]) <= 0 for row in evals)
    final = json.loads((run_dir / "final_eval.json").read_text())
    assert all(-1 <= r <= 0 for r in final["returns"])
    result = cli("eval", str(run_dir), "--episodes", "2", "-o", str(tmp_path / "e.json"))
    assert result.returncode == 0 and json.loads(result.stdout)["returns"] == final["returns"], result.stderr
    nir_path = tmp_path / "policy.nir"
    assert cli("export", str(run_dir), "-o", str(nir_path)).returncode == 0
    result = cli("eval", str(nir_path), "--episodes", "2")
    assert result.returncode == 0 and json.loads(result.stdout)["returns"] == final["returns"], result.stderr
    result = cli("energy", str(run_dir), "--episodes", "2", "-o", str(tmp_path / "energy.json"))
    assert result.returncode == 0 and json.loads((tmp_path / "energy.json").read_text())["mean_return"] <= 0
    # Another environment given with --env is made without the run's env_kwargs.
    result = cli("eval", str(run_dir), "--env", "CartPole-v1", "--episodes", "2", "-o", str(tmp_path / "v1.json"))
    assert result.returncode == 0 and min(json.loads(result.stdout)["returns"]) >= 8, result.stderr


def test_eval_in_an_incompatible_environment_is_refused(cli, tiny_runs):
    result = cli("eval", str(tiny_runs[0]), "--env", "Acrobot-v1", "-o", "/dev/null")
    assert result.returncode == 2 and "other observation or action spaces" in result.stderr
    assert "Traceback" not in result.stderr
