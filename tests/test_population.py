"""Populations: stacked networks, the one loop for K agents, and that each agent is the run it would be alone."""

import copy
import json

import numpy as np
import pytest
import torch

from spikerl.config import load_config
from spikerl.errors import SpikerlError
from spikerl.rl import dqn, td3
from spikerl.rl.envs import make_env
from spikerl.rl.evaluate import evaluate, evaluate_agents
from spikerl.rl.population import check_population, parse_seeds, seed_configs, train_population
from spikerl.rl.run import Run, CheckpointStore
from spikerl.snn.encoders import RunningMaxAbs
from spikerl.snn.network import build_network
from spikerl.snn.stacked import stack_modules, unstack_state
from tests.conftest import tensorboard_scalars

CARTPOLE = "configs/cartpole_dqn_quickstart.yaml"


@pytest.mark.parametrize("overrides", [
    [], ["network.encoder=population"], ["network.decoder=population"], ["network.kind=ann"],
    ["network.neuron.learnable=true", "network.backend=fused"], ["network.neuron.randomize=normal"],
    ["network.backend=reference", "network.bias=true"]])
@pytest.mark.parametrize("agents", [1, 3])
def test_a_stacked_network_computes_each_agent_as_its_own_network(overrides, agents):
    """Outputs and gradients of agent k's rows are agent k's own network's (its weights and membrane draw)."""
    cfg = load_config(CARTPOLE, overrides)
    nets = []
    for k in range(agents):
        torch.manual_seed(k)
        agent_cfg = copy.deepcopy(cfg)
        agent_cfg.network.neuron.alpha = [0.1 * k, 0.5 + 0.1 * k]  # per-agent membrane values
        nets.append(build_network(agent_cfg.network, 4, 2, torch.Generator().manual_seed(k)))
    stacked = stack_modules(nets)
    obs = torch.randn(agents, 64, 4)
    out = stacked(obs)
    (out ** 2).sum().backward()
    for k, net in enumerate(nets):
        own = net(obs[k])
        (own ** 2).sum().backward()
        assert torch.allclose(out[k], own, atol=1e-6, rtol=1e-5)
        for (name, p_stacked), p in zip(stacked.named_parameters(), net.parameters()):
            assert torch.allclose(p_stacked.grad[k].reshape(p.shape), p.grad, atol=1e-6, rtol=1e-5), name
        state = unstack_state(stacked, k)
        assert state.keys() == net.state_dict().keys()
        assert all(torch.equal(state[key], value) for key, value in net.state_dict().items())
    if agents == 1:  # a population of one is one network's arithmetic, bit for bit
        assert torch.equal(out[0], nets[0](obs[0]))


def test_population_evaluation_equals_each_agents_own_evaluation():
    cfg = load_config(CARTPOLE, ["network.hidden=[16, 16]"])
    env = make_env(cfg.env_id)
    policies = []
    for k in range(3):
        torch.manual_seed(k)
        policy = dqn.QPolicy(cfg, RunningMaxAbs(4), 2, torch.Generator().manual_seed(k))
        policy.obs_norm.update(torch.rand(10, 4) * (k + 1))
        policies.append(policy)
    stacked = stack_modules(policies)
    results = evaluate_agents(stacked, [0, 2], 3, cfg.env_id, 3, 100, "cpu")
    assert len(results) == 2
    for k, result in zip([0, 2], results):
        assert result == evaluate(policies[k].act, cfg.env_id, 3, 100)
    env.close()


def test_seeds_and_population_checks_are_one_line_errors(tmp_path):
    assert parse_seeds("0:4") == [0, 1, 2, 3] and parse_seeds("2,5") == [2, 5]
    for text in ("4:1", "a:b", "1,1"):
        with pytest.raises(SpikerlError, match="--seeds"):
            parse_seeds(text)
    cfgs = seed_configs(load_config(CARTPOLE), [0, 1], tmp_path)
    cfgs[1].network.neuron.theta = 0.7  # a per-agent value: allowed
    check_population(cfgs)
    cfgs[1].env_kwargs = {"sutton_barto_reward": True}  # another environment, though only one side names the key
    with pytest.raises(SpikerlError, match="env_kwargs.sutton_barto_reward"):
        check_population(cfgs)
    cfgs[1].env_kwargs = {}
    cfgs[1].network.hidden = [32, 32]  # a shape: refused, naming it
    with pytest.raises(SpikerlError, match="network.hidden"):
        check_population(cfgs)


def _solo(cfg):
    from spikerl.rl import train_run

    return train_run(cfg, Run(cfg))


def _population(cfgs, home):
    return train_population(home, cfgs)


ONE_UPDATE = {  # just past warm-up: the final models are the parameters after the first optimizer steps
    "dqn": (CARTPOLE, ["total_steps=104", "dqn.learning_starts=100", "dqn.train_every=4", "dqn.batch_size=32",
                       "network.hidden=[32, 32]"]),
    "td3": ("configs/pendulum_td3_snn.yaml", ["env_id=spikerl/PointReach-v0", "total_steps=102", "td3.learning_starts=100",
                                               "td3.batch_size=32", "network.hidden=[32, 32]", "td3.critic.hidden=[32, 32]"]),
    "ppo": ("configs/pendulum_ppo_snn.yaml", ["env_id=spikerl/PointReach-v0", "total_steps=128", "ppo.num_envs=2",
                                              "ppo.num_steps=64", "ppo.num_minibatches=2", "ppo.update_epochs=2",
                                              "network.hidden=[32, 32]", "ppo.critic.hidden=[32, 32]"]),
}
# The adaptive KL schedule gives each agent its own policy learning rate (they part after the first minibatch);
# with log_std_learning_rate the log-std steps in an Adam group of its own.
ONE_UPDATE["ppo-adaptive-kl"] = (ONE_UPDATE["ppo"][0], [*ONE_UPDATE["ppo"][1], "ppo.update_epochs=4", "ppo.desired_kl=0.002"])
ONE_UPDATE["ppo-log-std-rate"] = (ONE_UPDATE["ppo"][0], [*ONE_UPDATE["ppo-adaptive-kl"][1], "ppo.log_std_learning_rate=1e-3"])
# policy_target_kl stops each agent's policy after its own epoch (here after 2, 4, 1 and 2 of the 4 spiking ones),
# its weights and moments frozen while the others move.
ONE_UPDATE["ppo-policy-target-kl"] = (ONE_UPDATE["ppo"][0], [*ONE_UPDATE["ppo"][1], "ppo.update_epochs=4",
                                                             "ppo.policy_learning_rate=3e-3", "ppo.policy_target_kl=0.03",
                                                             "ppo.log_std_learning_rate=1e-3"])
# ... or, checked before every policy step, after their own minibatch
ONE_UPDATE["ppo-minibatch-kl"] = (ONE_UPDATE["ppo"][0], [*ONE_UPDATE["ppo-policy-target-kl"][1],
                                                         "ppo.policy_kl_check=minibatch"])


@pytest.mark.parametrize("algo", list(ONE_UPDATE))
@pytest.mark.parametrize("kind", ["snn", "ann"])
def test_one_population_update_equals_each_agents_own_update(tmp_path, algo, kind):
    """K = 4 agents (seeds and membrane values differ) stepped once together: each agent's parameters after the
    optimizer step equal those of its own run on the same batches, which its own generators draw."""
    path, overrides = ONE_UPDATE[algo]
    base = load_config(path, [*overrides, f"network.kind={kind}", "eval.every=0", "eval.final_episodes=1",
                              "checkpoint_every=0", "progress=false"])
    cfgs = seed_configs(base, [0, 1, 2, 3], tmp_path / "population")
    for k, cfg in enumerate(cfgs):
        cfg.network.neuron.theta = 0.2 + 0.1 * k
    _population(cfgs, tmp_path / "population")
    for cfg in cfgs:
        alone = copy.deepcopy(cfg)
        alone.run_dir = str(tmp_path / "alone" / f"s{cfg.seed}")
        _solo(alone)
        from spikerl.rl.checkpoint import load_checkpoint

        together = load_checkpoint(f"{cfg.run_dir}/final_model.pt")["policy"]
        own = load_checkpoint(f"{alone.run_dir}/final_model.pt")["policy"]
        assert together.keys() == own.keys()
        for key in own:
            assert torch.allclose(together[key], own[key], atol=1e-6, rtol=1e-5), (cfg.seed, key)
        alone_rows, together_rows = (np.loadtxt(tmp_path / where / f"s{cfg.seed}" / "episodes.csv", delimiter=",",
                                                skiprows=1, ndmin=2) for where in ("alone", "population"))
        if algo in ("ppo-policy-target-kl", "ppo-minibatch-kl") and kind == "snn":  # they stopped at different
            # epochs or minibatches (the ANN's never)
            epochs = [tensorboard_scalars(tmp_path / "population" / f"s{seed}", "charts/policy_epochs")[0][1]
                      for seed in (0, 1, 2, 3)]
            assert len(set(epochs)) > 1 and min(epochs) < 4, epochs
            if algo == "ppo-minibatch-kl":  # ... some inside an epoch
                assert any(epoch != int(epoch) for epoch in epochs), epochs
        if algo.startswith("ppo"):  # every action came from the policy: its continuous actions carry the products' rounding
            assert np.allclose(alone_rows, together_rows, rtol=1e-5, atol=1e-5) and len(alone_rows) > 0
        else:
            assert (tmp_path / "alone" / f"s{cfg.seed}" / "episodes.csv").read_text() == \
                (tmp_path / "population" / f"s{cfg.seed}" / "episodes.csv").read_text()


def test_agents_stop_alone_and_a_diverging_agent_stops_only_itself(tmp_path, monkeypatch):
    """Agent 1's rewards turn NaN: it stops with diverged.json; agent 0 trains on and matches its own run;
    agent 2's episode budget ends it early, with its final files written then."""
    from spikerl.rl.replay import ReplayBuffer

    sample = ReplayBuffer.sample

    def poisoned(self, batch_size, rngs, device="cpu"):
        batch = list(sample(self, batch_size, rngs, device))
        batch[2][1] = float("nan")
        return tuple(batch)

    base = load_config(CARTPOLE, ["total_steps=600", "dqn.learning_starts=100", "dqn.batch_size=16",
                                  "network.hidden=[16, 16]", "eval.every=300", "eval.episodes=2",
                                  "eval.final_episodes=2", "checkpoint_every=0", "progress=false"])
    home = tmp_path / "population"
    cfgs = seed_configs(base, [0, 1, 2], home)
    cfgs[2].total_episodes = 5
    monkeypatch.setattr(ReplayBuffer, "sample", poisoned)
    results = _population(cfgs, home)
    monkeypatch.setattr(ReplayBuffer, "sample", sample)
    assert results[0]["global_step"] == 600 and "diverged" in results[1]
    diverged = json.loads((home / "s1" / "diverged.json").read_text())
    assert diverged["global_step"] == 104 and "losses/td_loss is nan" in diverged["reason"]
    assert not (home / "s1" / "final_model.pt").exists()
    assert results[2]["train_episodes"] == 5 and results[2]["global_step"] < 600
    assert len((home / "s2" / "episodes.csv").read_text().splitlines()) == 6
    alone = copy.deepcopy(cfgs[0])
    alone.run_dir = str(tmp_path / "alone")
    _solo(alone)
    assert (tmp_path / "alone" / "episodes.csv").read_text() == (home / "s0" / "episodes.csv").read_text()
    assert (tmp_path / "alone" / "eval.csv").read_text() == (home / "s0" / "eval.csv").read_text()


def test_a_population_of_one_diverging_raises_as_a_run_does(tmp_path, monkeypatch):
    from spikerl.errors import TrainingDiverged
    from spikerl.rl.replay import ReplayBuffer

    sample = ReplayBuffer.sample
    monkeypatch.setattr(ReplayBuffer, "sample", lambda self, b, rngs, device="cpu": tuple(
        t * float("nan") if i == 2 else t for i, t in enumerate(sample(self, b, rngs, device))))
    cfg = load_config(CARTPOLE, ["total_steps=300", "dqn.learning_starts=100", "dqn.batch_size=16",
                                 "network.hidden=[16, 16]", "eval.every=0", "eval.final_episodes=1",
                                 "checkpoint_every=0", "progress=false", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(TrainingDiverged, match="training diverged at step 104: losses/td_loss is nan"):
        _solo(cfg)
    assert (tmp_path / "run" / "diverged.json").is_file()


def test_a_population_of_random_input_spikes_is_refused(tmp_path):
    cfgs = seed_configs(load_config(CARTPOLE, ["network.encoder=poisson", "network.normalize_obs=true"]), [0, 1], tmp_path)
    with pytest.raises(SpikerlError, match="train these seeds as separate runs"):
        check_population(cfgs)
    check_population(cfgs[:1])  # one seed: its run alone, as always


def test_seeds_on_the_command_line_make_agent_folders_that_every_command_reads(cli, tmp_path):
    home = tmp_path / "seeds"
    result = cli("train", CARTPOLE, "--seeds", "0:2", "total_steps=300", "dqn.learning_starts=100",
                 "network.hidden=[16, 16]", "eval.every=0", "eval.final_episodes=2", "checkpoint_every=200",
                 f"run_dir={home}", "threads=1", "progress=false")
    assert result.returncode == 0, result.stderr
    assert "2 agents: mean final return" in result.stdout
    assert sorted(p.name for p in home.iterdir()) == [".lock", "checkpoints", "population.yaml", "s0", "s1"]
    evaluated = cli("eval", str(home / "s1"), "--episodes", "2", "-o", str(tmp_path / "e.json"))
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["returns"] == \
        json.loads((home / "s1" / "final_eval.json").read_text())["returns"]
    # Evaluating from the population's checkpoint picks the agent's own weights out of the stacked ones.
    assert cli("eval", str(home / "s1"), "--checkpoint", str(home / "checkpoints" / "step_200.pt"), "--episodes", "1",
               "-o", str(tmp_path / "c.json")).returncode == 0
    for args, message in ((["--seeds", "3:1"], "names no seed"), (["--resume", str(home), "--seeds", "0:2"],
                                                                  "keeps its own seeds")):
        bad = cli("train", *([CARTPOLE] if args[0] == "--seeds" else []), *args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    # The population's own folder, given where an agent's is wanted, is one line naming the agents' folders
    for command in ("eval", "energy", "summary", "plot", "export", "video"):
        bad = cli(command, str(home))
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert f"{home} holds a population; give" in bad.stderr and str(home / "s1") in bad.stderr, bad.stderr
    for seeds in ("-2:0", "0:10000000000", "1,-3"):
        bad = cli("train", CARTPOLE, f"--seeds={seeds}")
        assert bad.returncode == 2 and "seeds must be in [0, 4294967295]" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
