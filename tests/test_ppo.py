"""PPO: GAE and the clipped losses by hand, the normalizers, learning, export, and bad input."""

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from spikerl.config import load_config
from spikerl.errors import ConfigError, SpikerlError
from spikerl.rl import ppo, train_run
from spikerl.rl.checkpoint import load_checkpoint, write_checkpoint
from spikerl.rl.envs import check_environment
from spikerl.rl.evaluate import evaluate
from spikerl.rl.run import Run
from tests.conftest import assert_policy_commands_read, tensorboard_scalars
from spikerl.snn.encoders import RunningMeanStd


def test_generalized_advantages_by_hand():
    # One agent, one environment, three steps; the episode ends at step 1, so step 2 begins another.
    rewards = torch.tensor([[[1.0], [1.0], [1.0]]])
    values = torch.tensor([[[0.5], [0.4], [0.3]]])
    ended = torch.tensor([[[0.0], [1.0], [0.0]]])
    next_value = torch.tensor([[0.2]])
    advantages, returns = ppo.generalized_advantages(rewards, values, ended, next_value, gamma=0.9, lam=0.8)
    # t = 2: 1 + 0.9 * 0.2 - 0.3 = 0.88. t = 1 ends: 1 - 0.4 = 0.6, nothing after it.
    # t = 0: delta = 1 + 0.9 * 0.4 - 0.5 = 0.86; A = 0.86 + 0.9 * 0.8 * 0.6 = 1.292.
    assert torch.allclose(advantages[0, :, 0], torch.tensor([1.292, 0.6, 0.88]))
    assert torch.allclose(returns[0, :, 0], torch.tensor([1.792, 1.0, 1.18]))


def test_generalized_advantages_per_agent_gamma_and_lambda_one_is_the_discounted_return():
    rewards = torch.ones(2, 4, 1)
    values, ended, next_value = torch.zeros(2, 4, 1), torch.zeros(2, 4, 1), torch.zeros(2, 1)
    gamma = torch.tensor([[0.5], [1.0]])
    _, returns = ppo.generalized_advantages(rewards, values, ended, next_value, gamma=gamma, lam=1.0)
    assert torch.allclose(returns[0, :, 0], torch.tensor([1.875, 1.75, 1.5, 1.0]))
    assert torch.allclose(returns[1, :, 0], torch.tensor([4.0, 3.0, 2.0, 1.0]))


def test_clipped_losses_by_hand():
    new_log_prob = torch.tensor([[math.log(1.5), math.log(0.5)]])  # ratios 1.5 and 0.5
    old_log_prob = torch.zeros(1, 2)
    advantages = torch.tensor([[1.0, -1.0]])
    new_value, old_value, returns = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 2.5]]), torch.tensor([[1.5, 1.0]])
    losses = ppo.clipped_losses(new_log_prob, old_log_prob, advantages, new_value, old_value, returns, 0.2,
                                clip_value_loss=True, normalize_advantages=False)
    # Policy: max(-1 * 1.5, -1 * 1.2) = -1.2 and max(1 * 0.5, 1 * 0.8) = 0.8; mean -0.2.
    assert losses["policy_loss"].item() == pytest.approx(-0.2)
    # Value: max((1 - 1.5)^2, (0.5 + 0.2 - 1.5)^2) = 0.64 and max((2 - 1)^2, (2.5 - 0.2 - 1)^2) = 1.69.
    assert losses["value_loss"].item() == pytest.approx(0.5 * (0.64 + 1.69) / 2)
    assert losses["approx_kl"].item() == pytest.approx(((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2)
    assert losses["clip_fraction"].item() == 1.0
    unclipped = ppo.clipped_losses(new_log_prob, old_log_prob, advantages, new_value, old_value, returns, 0.2,
                                   clip_value_loss=False, normalize_advantages=True)
    assert unclipped["value_loss"].item() == pytest.approx(0.5 * (0.25 + 1.0) / 2)
    a = 1 / math.sqrt(2)  # [1, -1] normalized (unbiased std sqrt(2))
    assert unclipped["policy_loss"].item() == pytest.approx((-a * 1.2 + a * 0.8) / 2, rel=1e-5)


def test_gaussian_and_categorical_log_probabilities_match_torch_distributions():
    cfg = load_config("configs/pendulum_ppo_snn.yaml", ["network.hidden=[8, 8]"])
    continuous = ppo.make_policy(cfg, gym.make("Pendulum-v1"))
    with torch.no_grad():
        continuous.log_std.fill_(-0.3)
    mean, actions = torch.randn(5, 1), torch.randn(5, 1)
    log_prob, entropy = continuous.log_prob_and_entropy(mean, actions)
    normal = torch.distributions.Normal(mean, torch.full_like(mean, math.exp(-0.3)))
    assert torch.allclose(log_prob, normal.log_prob(actions).sum(-1)) and torch.allclose(entropy, normal.entropy().sum(-1))
    discrete = ppo.make_policy(load_config("configs/cartpole_ppo_snn.yaml"), gym.make("CartPole-v1"))
    logits, choice = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    log_prob, entropy = discrete.log_prob_and_entropy(logits, choice)
    categorical = torch.distributions.Categorical(logits=logits)
    assert torch.allclose(log_prob, categorical.log_prob(choice)) and torch.allclose(entropy, categorical.entropy())
    # Inverse-CDF sampling: u below the first class's probability picks it, above picks the second.
    probs = torch.softmax(logits, -1)[:, 0]
    assert torch.equal(discrete.sample(logits, probs - 1e-4), torch.zeros(6, dtype=torch.int64))
    assert torch.equal(discrete.sample(logits, probs + 1e-4), torch.ones(6, dtype=torch.int64))


def test_running_mean_std_matches_numpy_and_keeps_agents_apart():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(7, 4)) for _ in range(5)]
    norm = RunningMeanStd(4)
    for batch in batches:
        norm.update(torch.as_tensor(batch))
    data = np.concatenate(batches)
    assert np.allclose(norm.mean.numpy(), data.mean(0), atol=1e-4) and np.allclose(norm.var.numpy(), data.var(0), atol=1e-3)
    stacked = RunningMeanStd(4).stacked(2)
    for batch in batches:
        stacked.update(torch.as_tensor(np.stack([batch, 10 * batch])))
    assert torch.allclose(stacked.mean[0, 0], norm.mean) and torch.allclose(stacked.var[1, 0], 100 * norm.var)
    x = torch.as_tensor(data[:3], dtype=torch.float32)
    assert torch.allclose(norm(x), ((x - norm.mean) / torch.sqrt(norm.var + 1e-8)).float().clamp(-10, 10))


def test_reward_scaler_divides_by_the_std_of_the_discounted_return():
    scaler = ppo.RewardScaler(agents=1, envs=1, clip=10.0)
    returns = []
    for t in range(50):
        ended = torch.tensor([[1.0 if t == 24 else 0.0]])
        scaled = scaler(torch.tensor([[1.0]], dtype=torch.float64), ended, 0.9)
        g = 1.0 + 0.9 * (returns[-1] if returns and t != 25 else 0.0)
        returns.append(g)
    # The statistics start from variance 1 with a weight of 1e-4 samples: negligible after 50.
    assert scaled.item() == pytest.approx(1.0 / np.sqrt(np.var(returns)), rel=1e-4)
    assert scaler.returns.item() == pytest.approx(returns[-1])


@pytest.mark.slow
def test_spiking_ppo_learns_cartpole(tmp_path):
    cfg = load_config("configs/cartpole_ppo_snn.yaml", [
        "total_steps=30720", "eval.every=0", "eval.final_episodes=10", "checkpoint_every=0",
        f"run_dir={tmp_path / 'run'}", "progress=false"])
    torch.manual_seed(cfg.seed)  # the initial weights the run starts from
    untrained = ppo.make_policy(cfg, gym.make("CartPole-v1"))
    before = evaluate(untrained.act, cfg.env_id, 10, cfg.eval.seed)["mean_return"]
    result = train_run(cfg, Run(cfg))
    assert before < 100
    assert result["mean_return"] >= 200, result  # seed 0 reaches 305 here (seeds 1, 2: 222, 296)


@pytest.mark.slow
def test_spiking_ppo_learns_point_reach(tmp_path):
    cfg = load_config("configs/pendulum_ppo_snn.yaml", [
        "env_id=spikerl/PointReach-v0", "total_steps=20480", "ppo.num_steps=256", "ppo.num_minibatches=16", "network.hidden=[64, 64]",
        "ppo.gamma=0.95", "ppo.learning_rate=0.0003", "eval.every=0", "eval.final_episodes=10", "checkpoint_every=0",
        f"run_dir={tmp_path / 'run'}", "progress=false"])
    result = train_run(cfg, Run(cfg))
    # Standing still scores about -24, the best policy about -0.7; this run reaches -5.3.
    assert result["mean_return"] >= -12, result


def test_a_ppo_policy_evaluates_exports_to_nir_quantizes_and_counts_energy(cli, tmp_path):
    run_dir = tmp_path / "run"
    trained = cli("train", "configs/pendulum_ppo_snn.yaml", "env_id=spikerl/PointReach-v0", "total_steps=512",
                  "ppo.num_envs=2", "ppo.num_steps=128", "ppo.num_minibatches=4", "ppo.update_epochs=2",
                  "network.hidden=[16, 16]", "eval.every=0", "eval.final_episodes=3", f"run_dir={run_dir}", "progress=false")
    assert trained.returncode == 0, trained.stderr
    assert_policy_commands_read(cli, run_dir, tmp_path)


def test_ppo_evaluates_the_policy_of_the_update_it_logs(cli, tmp_path):
    """Evaluations fall after the update that ends a rollout, so the final evaluation (reusing the periodic one
    at the last step) scores the saved final model."""
    run_dir = tmp_path / "run"
    trained = cli("train", "configs/pendulum_ppo_snn.yaml", "env_id=spikerl/PointReach-v0", "total_steps=512",
                  "ppo.num_envs=2", "ppo.num_steps=128", "ppo.num_minibatches=4", "network.hidden=[16, 16]",
                  "eval.every=200", "eval.episodes=3", "eval.final_episodes=3", f"run_dir={run_dir}", "progress=false")
    assert trained.returncode == 0, trained.stderr
    steps = [int(row.split(",")[0]) for row in (run_dir / "eval.csv").read_text().splitlines()[1:]]
    assert steps == [256, 512]  # the rollout boundaries at or after each multiple of 200
    assert cli("eval", str(run_dir), "--episodes", "3", "-o", str(tmp_path / "e.json")).returncode == 0
    final = json.loads((run_dir / "final_eval.json").read_text())
    assert json.loads((tmp_path / "e.json").read_text())["returns"] == final["returns"]


@pytest.mark.parametrize("kind", ["snn", "ann"])
def test_each_update_starts_from_the_policy_that_acted(tmp_path, monkeypatch, kind):
    # Acting computes the policy without gradients, batched over agents and environments; the update recomputes
    # it with gradients over a shuffled minibatch. A spiking policy whose spikes differed between the two (another
    # backend path, a carried state) would start each update off-policy. One minibatch per epoch: the update's
    # first losses come before any step, so every log ratio is 0 up to the rounding of products over other batch
    # shapes (about 1e-6 here; the second epoch's, after a step, are 0.03 to 1.5).
    from spikerl.rl.population import seed_configs, train_population

    ratios, original_losses = [], ppo.clipped_losses

    def recording(new_log_prob, old_log_prob, *args):
        ratios.append((new_log_prob - old_log_prob).detach().abs().max().item())
        return original_losses(new_log_prob, old_log_prob, *args)

    monkeypatch.setattr(ppo, "clipped_losses", recording)
    base = load_config("configs/pendulum_ppo_snn.yaml", [
        "env_id=spikerl/PointReach-v0", "total_steps=768", "ppo.num_envs=2", "ppo.num_steps=128",
        "ppo.num_minibatches=1", "ppo.update_epochs=2", f"network.kind={kind}", "network.hidden=[16, 16]",
        "ppo.learning_rate=1e-2", "eval.every=0", "eval.final_episodes=1", "progress=false"])
    train_population(tmp_path, seed_configs(base, [0, 1], tmp_path))
    assert len(ratios) == 3 * 2
    assert max(ratios[0::2]) < 1e-3  # each update's first epoch
    assert min(ratios[1::2]) > 1e-2  # its second epoch, after a step: the check sees a change


@pytest.mark.parametrize("override, message", [
    (["ppo.num_minibatches=3"], "ppo.num_minibatches (3) must divide the rollout of ppo.num_envs x ppo.num_steps = 512"),
    (["total_steps=100"], "total_steps (100) is less than one PPO rollout"),
    (["ppo.gae_lambda=1.5"], "ppo.gae_lambda must be in [0, 1]"),
    (["ppo.adam_eps=0"], "ppo.adam_eps must be > 0, got 0"),
    (["ppo.policy_adam_eps=-1"], "ppo.policy_adam_eps must be > 0, got -1"),
    (["ppo.policy_num_minibatches=3"], "ppo.policy_num_minibatches (3) must divide ppo.num_minibatches (4)"),
    (["ppo.policy_num_minibatches=2", "ppo.desired_kl=0.01"], "does not combine with fewer ppo.policy_num_minibatches"),
    (["env_id=spikerl/NoSuchTask-v0"], "unknown environment"),
])
def test_bad_ppo_input_is_one_line(cli, tmp_path, override, message):
    result = cli("train", "configs/cartpole_ppo_snn.yaml", *override, f"run_dir={tmp_path / 'run'}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def first_update(run_dir, *overrides):
    """A small spiking PPO run's actor and value after its first update (a checkpoint at step 256)."""
    cfg = load_config("configs/pendulum_ppo_snn.yaml", [
        "env_id=spikerl/PointReach-v0", "total_steps=512", "ppo.num_envs=1", "ppo.num_steps=256",
        "ppo.num_minibatches=4", "ppo.update_epochs=2", "network.hidden=[16, 16]", "eval.every=0",
        "eval.final_episodes=1", "checkpoint_every=256", f"run_dir={run_dir}", "progress=false", *overrides])
    train_run(cfg, Run(cfg))
    data = load_checkpoint(run_dir / "checkpoints" / "step_256.pt")
    return data["components"]["actor"], data["components"]["value"]


def test_the_policy_learning_rate_moves_the_policy_only(tmp_path):
    still_a, value_a = first_update(tmp_path / "a", "ppo.learning_rate=1e-3", "ppo.policy_learning_rate=1e-12")
    still_b, value_b = first_update(tmp_path / "b", "ppo.learning_rate=1e-2", "ppo.policy_learning_rate=1e-12")
    moved, _ = first_update(tmp_path / "c", "ppo.learning_rate=1e-3")
    same_rate, _ = first_update(tmp_path / "d", "ppo.learning_rate=1e-3", "ppo.policy_learning_rate=1e-3")
    weights = [k for k in moved if k.endswith("weight") or k == "log_std"]
    assert all((still_a[k] - still_b[k]).abs().max() < 1e-9 for k in weights)  # the value's rate does not move it
    assert all((still_a[k] - moved[k]).abs().max() > 1e-4 for k in weights)
    assert all(torch.equal(moved[k], same_rate[k]) for k in moved)  # unset, it is learning_rate
    assert all((value_a[k] - value_b[k]).abs().max() > 1e-3 for k in value_a)


def test_adam_eps_bounds_the_steps_of_weights_whose_gradients_are_below_it(tmp_path):
    # One update of 8 minibatch steps at 1e-3: with eps far below every gradient, Adam moves each weight by
    # about the rate per step; with eps far above them, by the gradient times rate / eps.
    still, value_still = first_update(tmp_path / "still", "ppo.learning_rate=1e-12")
    full, _ = first_update(tmp_path / "full", "ppo.adam_eps=1e-12")
    damped, _ = first_update(tmp_path / "damped", "ppo.adam_eps=100")
    for k in [k for k in still if k.endswith("weight") or k == "log_std"]:
        full_move, damped_move = (full[k] - still[k]).abs().max(), (damped[k] - still[k]).abs().max()
        assert 1e-3 < full_move <= 8 * 1e-3 * 1.02, k
        assert damped_move < 1e-3 * full_move, k
    optimizer = load_checkpoint(tmp_path / "damped" / "checkpoints" / "step_256.pt")["components"]["optimizer"]
    assert [group["eps"] for group in optimizer["param_groups"]] == [100, 100]  # saved, so a resume keeps it
    # policy_adam_eps: the policy's Adam group alone; a log-std with its own rate (its own group) and the value
    # network keep adam_eps
    own_rate = ["ppo.adam_eps=1e-12", "ppo.log_std_learning_rate=1e-3"]
    policy_damped, value_kept = first_update(tmp_path / "policy", *own_rate, "ppo.policy_adam_eps=100")
    policy_full, value_full = first_update(tmp_path / "full-log-std", *own_rate)
    for k in [k for k in still if k.endswith("weight")]:
        assert (policy_damped[k] - still[k]).abs().max() < 1e-3 * (policy_full[k] - still[k]).abs().max(), k
    # (not to the bit: their gradients depend on the policy's mean, and the joint clip on its gradient)
    assert (policy_damped["log_std"] - still["log_std"]).abs().max() > 0.5 * (policy_full["log_std"] - still["log_std"]).abs().max()
    for k in value_full:
        assert (value_kept[k] - value_still[k]).abs().max() > 0.5 * (value_full[k] - value_still[k]).abs().max(), k


def test_clipping_each_network_on_its_own_keeps_the_policys_gradient_out_of_the_value_networks_steps(tmp_path):
    # A tight clip binds every step. The first rollout and its minibatches are the same whatever the policy's
    # rate, so with its own clip the value network takes the same steps however the policy moves.
    for rate in ("1e-3", "1e-5"):
        first_update(tmp_path / f"own-{rate}", "ppo.max_grad_norm=0.01", "ppo.clip_grad_per_network=true",
                     f"ppo.policy_learning_rate={rate}")
        first_update(tmp_path / f"joint-{rate}", "ppo.max_grad_norm=0.01", f"ppo.policy_learning_rate={rate}")
    value = {name: load_checkpoint(tmp_path / name / "checkpoints" / "step_256.pt")["components"]["value"]
             for name in ("own-1e-3", "own-1e-5", "joint-1e-3", "joint-1e-5")}
    assert all(torch.equal(value["own-1e-3"][k], value["own-1e-5"][k]) for k in value["own-1e-3"])
    assert any(not torch.equal(value["joint-1e-3"][k], value["joint-1e-5"][k]) for k in value["joint-1e-3"])
    # ...and where the joint clip binds, the value network's steps are not those of its own clip
    assert any(not torch.equal(value["own-1e-3"][k], value["joint-1e-3"][k]) for k in value["own-1e-3"])
    # The clip binds on each network: unclipped, both take other steps; and the value's settings leave the
    # policy's steps as they are.
    unclipped_policy, unclipped_value = first_update(tmp_path / "unclipped", "ppo.max_grad_norm=1e9",
                                                     "ppo.clip_grad_per_network=true", "ppo.policy_learning_rate=1e-3")
    own_policy = load_checkpoint(tmp_path / "own-1e-3" / "checkpoints" / "step_256.pt")["components"]["actor"]
    assert any(not torch.equal(unclipped_value[k], value["own-1e-3"][k]) for k in unclipped_value)
    assert any(not torch.equal(unclipped_policy[k], own_policy[k]) for k in unclipped_policy)
    other_value_rate, _ = first_update(tmp_path / "value-rate", "ppo.max_grad_norm=0.01", "ppo.clip_grad_per_network=true",
                                       "ppo.policy_learning_rate=1e-3", "ppo.learning_rate=1e-2", "ppo.value_coef=2.0")
    assert all(torch.equal(other_value_rate[k], own_policy[k]) for k in own_policy)
    # The logged norms are the gradients' before the clip
    for tag in ("losses/policy_grad_norm", "losses/value_grad_norm"):
        assert all(norm > 0.01 for _, norm in tensorboard_scalars(tmp_path / "own-1e-3", tag)), tag


def test_the_logged_gradient_norms_are_each_updates_means_before_the_clip(tmp_path, monkeypatch):
    # Three epochs of 4 minibatches; the policy trains in the first epoch of each update only. The policy's
    # logged norm is the mean over its 4 steps, the value network's over all 12, both before the (binding) clip.
    recorded, original = [], ppo.grad_norm_per_agent

    def recording(parameters):
        norms = original(parameters)
        recorded.append((id(parameters[0]), norms[0].item()))
        return norms

    monkeypatch.setattr(ppo, "grad_norm_per_agent", recording)
    first_update(tmp_path, "ppo.update_epochs=3", "ppo.policy_target_kl=1e-12", "ppo.max_grad_norm=0.01")
    policy_side = recorded[0][0]
    policy = [norm for side, norm in recorded if side == policy_side]
    value = [norm for side, norm in recorded if side != policy_side]
    assert (len(policy), len(value)) == (2 * 4, 2 * 12)
    logged = {tag: [v for _, v in tensorboard_scalars(tmp_path, f"losses/{tag}_grad_norm")] for tag in ("policy", "value")}
    assert logged["policy"] == pytest.approx([np.mean(policy[:4]), np.mean(policy[4:])], rel=1e-5)
    assert logged["value"] == pytest.approx([np.mean(value[:12]), np.mean(value[12:])], rel=1e-5)


def test_fewer_policy_minibatches_step_the_policy_on_mean_gradients_and_the_value_network_as_before(tmp_path):
    # With each network's gradient clipped on its own (at a norm never reached) and advantages left as they are,
    # the mean of the policy's gradients over 2 of the 4 minibatches is its gradient on their union: the policy
    # steps as a run with 2 minibatches does (the KL stop included), and the value network as one with 4.
    own = ["ppo.clip_grad_per_network=true", "ppo.max_grad_norm=1e9", "ppo.normalize_advantages=false",
           "ppo.update_epochs=3", "ppo.policy_target_kl=0.004", "ppo.log_std_learning_rate=1e-3",
           "ppo.policy_learning_rate=1e-3"]
    mean_policy, mean_value = first_update(tmp_path / "mean", *own, "ppo.policy_num_minibatches=2")
    two_policy, two_value = first_update(tmp_path / "two", *own, "ppo.num_minibatches=2")
    four_policy, four_value = first_update(tmp_path / "four", *own)
    assert all(torch.allclose(mean_policy[k], two_policy[k], rtol=1e-4, atol=1e-6) for k in two_policy)
    assert all(torch.equal(mean_value[k], four_value[k]) for k in four_value)
    assert any((mean_policy[k] - four_policy[k]).abs().max() > 1e-4 for k in four_policy)
    assert any((mean_value[k] - two_value[k]).abs().max() > 1e-4 for k in two_value)
    epochs = tensorboard_scalars(tmp_path / "mean", "charts/policy_epochs")[0][1]
    assert epochs == tensorboard_scalars(tmp_path / "two", "charts/policy_epochs")[0][1] and 1.0 <= epochs < 3.0
    # Adam: the policy's steps only on its turns (2 per epoch, a stopped epoch's undone ones included), with the
    # moments of the 2-minibatch run; the value network's on each of its 4 minibatches
    def adam_state(run_dir):
        state = load_checkpoint(run_dir / "checkpoints" / "step_256.pt")["components"]["optimizer"]
        return [[state["state"][i] for i in group["params"]] for group in state["param_groups"]]

    mean_state, two_state = adam_state(tmp_path / "mean"), adam_state(tmp_path / "two")
    assert [{float(entry["step"]) for entry in group} for group in mean_state] == [{2.0 * 3}, {4.0 * 3}, {2.0 * 3}]
    for group in (0, 2):  # the policy's network, its log-std
        for mine, theirs in zip(mean_state[group], two_state[group], strict=True):
            for moment in ("exp_avg", "exp_avg_sq"):
                assert torch.allclose(mine[moment], theirs[moment], rtol=1e-3, atol=1e-9), moment


def test_fewer_policy_minibatches_keep_the_joint_clip_of_the_value_networks_steps(tmp_path):
    # The joint clip ties the value network's steps to the policy's gradient on the same minibatch. A policy that
    # hardly moves (1e-12) sees the same minibatches in both runs, so the value network's steps are the same
    # whether the policy steps on every minibatch or on the mean over four.
    still = ["ppo.policy_learning_rate=1e-12", "ppo.log_std_learning_rate=1e-12", "ppo.max_grad_norm=0.5"]
    _, every_value = first_update(tmp_path / "every", *still)
    _, mean_value = first_update(tmp_path / "mean", *still, "ppo.policy_num_minibatches=1")
    assert all(torch.allclose(mean_value[k], every_value[k], rtol=1e-5, atol=1e-7) for k in every_value)
    # ... which a value network clipped alone does not take: the joint clip binds
    _, alone_value = first_update(tmp_path / "alone", *still, "ppo.clip_grad_per_network=true")
    assert any((alone_value[k] - every_value[k]).abs().max() > 1e-4 for k in every_value)


def test_the_log_std_learning_rate_moves_the_log_std_only(tmp_path):
    slow = ["ppo.learning_rate=1e-12", "ppo.policy_learning_rate=1e-12"]
    with_policy, _ = first_update(tmp_path / "a", *slow)  # unset: the log-std trains at the policy's rate
    small, _ = first_update(tmp_path / "b", *slow, "ppo.log_std_learning_rate=1e-3")
    large, _ = first_update(tmp_path / "c", *slow, "ppo.log_std_learning_rate=1e-2")
    weights = [k for k in small if k.endswith("weight")]
    assert all((small[k] - large[k]).abs().max() < 1e-9 for k in weights)  # the network keeps the policy's rate
    assert (with_policy["log_std"] - 0.0).abs().max() < 1e-9  # initial_log_std 0, moved by 1e-12 per step
    # Adam moves each element by about its rate per step: 8 minibatch steps
    assert 1e-4 < (small["log_std"] - with_policy["log_std"]).abs().max() <= 8 * 1e-3 * 1.02
    assert (large["log_std"] - with_policy["log_std"]).abs().max() > 5 * (small["log_std"] - with_policy["log_std"]).abs().max()
    # The second (last) update anneals the log-std's rate with the others: to half
    rates = [value for _, value in tensorboard_scalars(tmp_path / "c", "charts/log_std_learning_rate")]
    assert rates == pytest.approx([1e-2, 0.5e-2], rel=1e-6)
    # With desired_kl the policy's steps are scaled by its adaptive rate (from 1e-5 here), the log-std's are not
    adaptive, _ = first_update(tmp_path / "d", *slow, "ppo.desired_kl=0.01", "ppo.policy_learning_rate=1e-5",
                               "ppo.log_std_learning_rate=1e-2")
    assert (adaptive["log_std"] - large["log_std"]).abs().max() < 0.05 * large["log_std"].abs().max()


def test_the_policy_target_kl_stops_the_policy_and_not_the_value(tmp_path):
    # A target no update stays under: the policy trains in its first epoch only, the value in all three.
    stopped, stopped_value = first_update(tmp_path / "a", "ppo.update_epochs=3", "ppo.policy_target_kl=1e-12",
                                          "ppo.log_std_learning_rate=1e-3")
    one_epoch, one_epoch_value = first_update(tmp_path / "b", "ppo.update_epochs=1", "ppo.log_std_learning_rate=1e-3")
    three_epochs, _ = first_update(tmp_path / "c", "ppo.update_epochs=3", "ppo.log_std_learning_rate=1e-3")
    assert all(torch.equal(stopped[k], one_epoch[k]) for k in one_epoch)  # the first epoch's policy, to the bit
    # ... and its Adam moments as Adam's steps use them (bias-corrected; the shared step count went on)
    def policy_moments(run_dir):
        state = load_checkpoint(run_dir / "checkpoints" / "step_256.pt")["components"]["optimizer"]
        groups = [state["param_groups"][0], state["param_groups"][2]]  # the network's, the log-std's
        return [(state["state"][i]["exp_avg"] / (1 - 0.9 ** float(state["state"][i]["step"])),
                 state["state"][i]["exp_avg_sq"] / (1 - 0.999 ** float(state["state"][i]["step"])))
                for group in groups for i in group["params"]]

    for (m, v), (m1, v1) in zip(policy_moments(tmp_path / "a"), policy_moments(tmp_path / "b"), strict=True):
        assert torch.allclose(m, m1, rtol=1e-5, atol=1e-12) and torch.allclose(v, v1, rtol=1e-5, atol=1e-18)
    assert any(not torch.equal(stopped[k], three_epochs[k]) for k in three_epochs)
    assert any(not torch.equal(stopped_value[k], one_epoch_value[k]) for k in one_epoch_value)
    assert [value for _, value in tensorboard_scalars(tmp_path / "a", "charts/policy_epochs")] == [1.0, 1.0]
    # The policy's logged gradient norm is the mean over the minibatch steps it trained in: the first epoch's here
    first_norm = [tensorboard_scalars(tmp_path / run, "losses/policy_grad_norm")[0][1] for run in ("a", "b")]
    assert first_norm[0] == pytest.approx(first_norm[1], rel=1e-6) and first_norm[0] > 0
    # A target no update reaches: every epoch trains the policy, as without it
    loose, _ = first_update(tmp_path / "d", "ppo.update_epochs=3", "ppo.policy_target_kl=1e9",
                            "ppo.log_std_learning_rate=1e-3")
    assert all(torch.equal(loose[k], three_epochs[k]) for k in three_epochs)


def test_the_minibatch_kl_check_stops_the_policy_before_the_step_that_would_pass_the_target(tmp_path, monkeypatch):
    # The KL each minibatch reports is scripted. The first update's first minibatch is past the target, but the
    # update's first step is never checked; its second is under; its third is past again: the policy steps on the
    # first two and stops before the third. After the update it is the policy the third minibatch saw, the third's
    # gradient was zeroed before its norm (and the clip) were taken, and no later minibatch computes the policy's
    # backward pass. The second update's KL is under for its first epoch and past on the second epoch's first
    # minibatch: it stops there, after one epoch.
    scripted, original_losses = iter([1.0, 0.0, 1.0] + [0.0] * 4 + [1.0]), ppo.clipped_losses

    def scripted_kl(*args):
        losses = original_losses(*args)
        losses["approx_kl"] = torch.full_like(losses["approx_kl"], next(scripted, 0.0))
        return losses

    seen, original_log_prob = [], ppo.Policy.log_prob_and_entropy

    def recording(self, readout, actions):  # the policy's weights at each minibatch pass with a backward pass
        if readout.requires_grad and readout.shape[-2] == 64:
            seen.append({k: v.detach().clone() for k, v in self.state_dict().items()})
        return original_log_prob(self, readout, actions)

    norms, original_norm = [], ppo.grad_norm_per_agent

    def recording_norms(parameters):
        computed = original_norm(parameters)
        norms.append((id(parameters[0]), computed[0].item()))
        return computed

    monkeypatch.setattr(ppo, "clipped_losses", scripted_kl)
    monkeypatch.setattr(ppo.Policy, "log_prob_and_entropy", recording)
    monkeypatch.setattr(ppo, "grad_norm_per_agent", recording_norms)
    policy, _ = first_update(tmp_path, "ppo.update_epochs=3", "ppo.policy_target_kl=0.5",
                             "ppo.policy_kl_check=minibatch", "ppo.log_std_learning_rate=1e-3")
    assert len(seen) == 3 + 5
    assert all(torch.equal(policy[k], seen[2][k]) for k in policy)  # two steps taken, the third not
    assert any(not torch.equal(seen[2][k], seen[1][k]) for k in policy)
    assert [v for _, v in tensorboard_scalars(tmp_path, "charts/policy_epochs")] == [0.5, 1.0]
    assert tensorboard_scalars(tmp_path, "losses/approx_kl")[0][1] == 1.0  # logged: the KL that stopped it
    policy_norms = [norm for side, norm in norms if side == norms[0][0]][:3]
    assert policy_norms[0] > 0 and policy_norms[1] > 0 and policy_norms[2] == 0.0
    logged_norm = tensorboard_scalars(tmp_path, "losses/policy_grad_norm")[0][1]
    assert logged_norm == pytest.approx(np.mean(policy_norms[:2]), rel=1e-5)  # the mean over the steps it took
    # Checked after each epoch instead, the same scripted KL stops the policy after its first epoch of 4 steps
    monkeypatch.setattr(ppo, "grad_norm_per_agent", original_norm)
    scripted, seen[:] = iter([0.0, 0.0, 1.0, 1.0]), []
    after_epoch, _ = first_update(tmp_path / "epoch", "ppo.update_epochs=3", "ppo.policy_target_kl=0.5",
                                  "ppo.log_std_learning_rate=1e-3")
    assert len(seen) == 4 + 3 * 4 and any(not torch.equal(after_epoch[k], policy[k]) for k in policy)
    assert [v for _, v in tensorboard_scalars(tmp_path / "epoch", "charts/policy_epochs")] == [1.0, 3.0]
    # Checked at every minibatch, the stop works within a single epoch, which the epoch's check refuses
    load_config("configs/pendulum_ppo_snn.yaml", ["ppo.policy_target_kl=0.03", "ppo.policy_kl_check=minibatch",
                                                  "ppo.update_epochs=1"])
    with pytest.raises(ConfigError, match="it needs ppo.update_epochs >= 2"):
        load_config("configs/pendulum_ppo_snn.yaml", ["ppo.policy_target_kl=0.03", "ppo.update_epochs=1"])


def test_log_std_after_stop_trains_the_log_std_alone_once_the_policy_has_stopped(tmp_path):
    # A target no update stays under: the network trains in the first of three epochs only, with or without the
    # option; the log-std trains in all three with it (as far as in three unstopped epochs' first), in one without.
    kept, _ = first_update(tmp_path / "a", "ppo.update_epochs=3", "ppo.policy_target_kl=1e-12", "ppo.log_std_after_stop=true")
    stopped, _ = first_update(tmp_path / "b", "ppo.update_epochs=3", "ppo.policy_target_kl=1e-12")
    one_epoch, _ = first_update(tmp_path / "c", "ppo.update_epochs=1")
    network = [k for k in stopped if k != "log_std"]
    assert all(torch.equal(kept[k], stopped[k]) for k in network)
    assert torch.equal(stopped["log_std"], one_epoch["log_std"])
    # Adam moves each element by at most about its rate (the preset's 1e-3, not yet annealed) per step: 3 epochs x 4
    # minibatch steps against 4 (from the initial log-std, 0)
    moved, moved_once = kept["log_std"].abs().max(), stopped["log_std"].abs().max()
    assert moved_once > 1e-4 and moved > moved_once and moved <= 12 * 1e-3 * 1.02
    # the logged entropy follows the log-std as it goes on training (a Gaussian's entropy is the log-std's)
    entropy = {run: tensorboard_scalars(tmp_path / run, "losses/entropy")[0][1] for run in ("a", "b")}
    assert entropy["a"] != entropy["b"]
    # ... while the other diagnostics stay those of the minibatch whose KL stopped the network
    for tag in ("losses/approx_kl", "losses/clipfrac", "losses/policy_loss"):
        assert tensorboard_scalars(tmp_path / "a", tag)[0] == tensorboard_scalars(tmp_path / "b", tag)[0], tag


def test_log_std_after_stop_is_refused_without_the_kl_stop_and_for_discrete_actions(tmp_path):
    with pytest.raises(ConfigError, match="ppo.log_std_after_stop keeps the log-std training once ppo.policy_target_kl"):
        load_config("configs/pendulum_ppo_snn.yaml", ["ppo.log_std_after_stop=true"])
    cfg = load_config("configs/cartpole_ppo_snn.yaml", ["ppo.policy_target_kl=0.03", "ppo.log_std_after_stop=true",
                                                        f"run_dir={tmp_path / 'r'}"])
    with pytest.raises(SpikerlError, match="ppo.log_std_after_stop is for continuous actions; CartPole-v1 has discrete"):
        check_environment(cfg)


def count_policy_passes(monkeypatch, skip: bool) -> list[int]:
    """Set SKIP_STOPPED_POLICY to `skip`; the list returned gets, for each pass through the policy's log-prob,
    its rows if it has a backward pass, else 0 (a minibatch of 64 with one: 64; acting, one row at a time)."""
    monkeypatch.setattr(ppo, "SKIP_STOPPED_POLICY", skip)
    # The unwrapped method, so that a second call replaces the first counter instead of wrapping it.
    count, original = [], getattr(ppo.Policy.log_prob_and_entropy, "__wrapped__", ppo.Policy.log_prob_and_entropy)

    def counting(self, *args):
        count.append(args[0].shape[-2] * args[0].requires_grad)
        return original(self, *args)

    counting.__wrapped__ = original
    monkeypatch.setattr(ppo.Policy, "log_prob_and_entropy", counting)
    return count


@pytest.mark.parametrize("network, skipped_passes", [
    (["network.kind=snn"], 2 * 4), (["network.kind=ann"], 2 * 4), (["network.kind=snn", "env_id=CartPole-v1"], 2 * 4),
    (["network.kind=snn", "network.encoder=poisson"], 2 * 4 * 4),  # random input spikes: no skipping
    (["network.kind=snn", "ppo.log_std_after_stop=true"], 2 * 4),  # the readout without a backward pass
    (["network.kind=snn", "ppo.log_std_after_stop=true", "ppo.log_std_learning_rate=3e-3"], 2 * 4),
    (["network.kind=snn", "ppo.policy_kl_check=minibatch"], 2 * 2),  # stopped at each update's second minibatch
    (["network.kind=snn", "ppo.policy_kl_check=minibatch", "ppo.log_std_after_stop=true"], 2 * 2)])
def test_skipping_a_stopped_policys_passes_trains_and_logs_what_computing_and_undoing_them_does(tmp_path, monkeypatch,
                                                                                                 network, skipped_passes):
    # Two updates of four epochs of 4 minibatches; the policy stops after its first epoch. Both paths: the same
    # actor, value and Adam state after the first update and the same final policy, to the bit, the same episodes,
    # evaluations and TensorBoard scalars; the skipping path computes the policy in its first epochs only (unless
    # its spikes are random: skipping passes would change the later draws).
    passes = {}
    for skip in (True, False):
        count = count_policy_passes(monkeypatch, skip)
        first_update(tmp_path / str(skip), "ppo.update_epochs=4", "ppo.policy_target_kl=1e-12", *network)
        passes[skip] = sum(1 for rows in count if rows == 64)
    assert (passes[True], passes[False]) == (skipped_passes, 2 * 4 * 4)
    runs = {skip: tmp_path / str(skip) for skip in (True, False)}
    fast, reference = (load_checkpoint(runs[skip] / "checkpoints" / "step_256.pt")["components"] for skip in (True, False))
    for component in ("actor", "value"):
        assert fast[component].keys() == reference[component].keys()
        assert all(torch.equal(fast[component][k], reference[component][k]) for k in reference[component]), component
    fast_adam, reference_adam = fast["optimizer"]["state"], reference["optimizer"]["state"]
    assert fast_adam.keys() == reference_adam.keys()
    for i in reference_adam:
        assert all(torch.equal(torch.as_tensor(fast_adam[i][k]), torch.as_tensor(reference_adam[i][k]))
                   for k in reference_adam[i]), i
    fast_final, reference_final = (load_checkpoint(runs[skip] / "final_model.pt")["policy"] for skip in (True, False))
    assert fast_final.keys() == reference_final.keys()
    assert all(torch.equal(fast_final[k], reference_final[k]) for k in reference_final)
    for name in ("episodes.csv", "eval.csv"):
        assert (runs[True] / name).read_bytes() == (runs[False] / name).read_bytes()
    finals = [json.loads((runs[skip] / "final_eval.json").read_text()) for skip in (True, False)]
    assert finals[0]["returns"] == finals[1]["returns"]  # the rest holds wall times
    for tag in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
                "charts/policy_epochs", "losses/policy_grad_norm", "losses/value_grad_norm"):
        assert tensorboard_scalars(runs[True], tag) == tensorboard_scalars(runs[False], tag), tag
    epochs = [0.25, 0.25] if "ppo.policy_kl_check=minibatch" in network else [1.0, 1.0]
    assert [v for _, v in tensorboard_scalars(runs[True], "charts/policy_epochs")] == epochs


def test_an_agent_that_finished_does_not_hold_the_others_update_to_the_policys_passes(tmp_path, monkeypatch):
    # Two agents; agent 1 finishes after two episodes (80 steps), inside the first rollout. Its policy then stays
    # as it finished, like a stopped one, so that once agent 0's policy stops (after the first of four epochs) no
    # policy pass with a backward pass is computed, in both updates; both paths train and log what computing and
    # undoing the passes does.
    from spikerl.rl.population import seed_configs, train_population

    base = load_config("configs/pendulum_ppo_snn.yaml", [
        "env_id=spikerl/PointReach-v0", "total_steps=512", "ppo.num_envs=1", "ppo.num_steps=256",
        "ppo.num_minibatches=4", "ppo.update_epochs=4", "ppo.policy_target_kl=1e-12", "network.hidden=[16, 16]",
        "eval.every=0", "eval.final_episodes=1", "checkpoint_every=256", "progress=false"])
    passes, original_losses = {}, ppo.clipped_losses

    def finished_agent_never_passes_the_target(*args):  # so that only its finishing can count it as stopped
        losses = original_losses(*args)
        losses["approx_kl"] = losses["approx_kl"] * torch.tensor([1.0, 0.0])
        return losses

    monkeypatch.setattr(ppo, "clipped_losses", finished_agent_never_passes_the_target)
    for skip in (True, False):
        count = count_policy_passes(monkeypatch, skip)
        cfgs = seed_configs(base, [0, 1], tmp_path / str(skip))
        cfgs[1].total_episodes = 2
        train_population(tmp_path / str(skip), cfgs)
        passes[skip] = sum(1 for rows in count if rows == 64)
    assert (passes[True], passes[False]) == (2 * 4, 2 * 4 * 4)
    finished = json.loads((tmp_path / "True" / "s1" / "final_eval.json").read_text())
    assert finished["global_step"] == 80 and finished["train_episodes"] == 2
    as_finished = load_checkpoint(tmp_path / "True" / "s1" / "final_model.pt")["policy"]
    after_update = load_checkpoint(tmp_path / "True" / "checkpoints" / "step_256.pt")["components"]["actor"]
    trained = [k for k in as_finished if not k.startswith("obs_norm.")]  # its normalizer's rows still see its last obs
    assert all(torch.equal(after_update[k][1].reshape(as_finished[k].shape), as_finished[k]) for k in trained)
    fast, reference = (load_checkpoint(tmp_path / str(skip) / "checkpoints" / "step_256.pt")["components"]
                       for skip in (True, False))
    for component in ("actor", "value"):
        assert all(torch.equal(fast[component][k], reference[component][k]) for k in reference[component]), component
    fast, reference = (load_checkpoint(tmp_path / str(skip) / "s0" / "final_model.pt")["policy"] for skip in (True, False))
    assert all(torch.equal(fast[k], reference[k]) for k in reference)
    for name in ("episodes.csv", "eval.csv"):
        assert (tmp_path / "True" / "s0" / name).read_bytes() == (tmp_path / "False" / "s0" / name).read_bytes()
    assert (tensorboard_scalars(tmp_path / "True" / "s0", "losses/approx_kl")
            == tensorboard_scalars(tmp_path / "False" / "s0", "losses/approx_kl"))


def test_a_checkpoint_with_one_adam_group_is_split_into_policy_and_value():
    policy = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(2, 3)), torch.nn.Parameter(torch.randn(2)),
                                     torch.nn.Parameter(torch.randn(1, 2))])  # three: as weight, bias, log_std
    value = torch.nn.Linear(3, 1)
    before = torch.optim.Adam([*policy.parameters(), *value.parameters()], lr=1e-3)
    for _ in range(2):
        before.zero_grad()
        ((policy[0] ** 2).sum() + policy[1].sum() + 3 * policy[2].sum() + value(torch.ones(3)).sum() ** 2).backward()
        before.step()
    state = before.state_dict()
    ppo.upgrade_optimizer_state(state, len(list(policy.parameters())))
    after = torch.optim.Adam([{"params": list(policy.parameters())}, {"params": list(value.parameters())}], lr=1e-3)
    after.load_state_dict(state)
    assert [len(group["params"]) for group in after.param_groups] == [3, 2]
    for parameter in [*policy.parameters(), *value.parameters()]:  # each parameter keeps its own moments
        assert torch.equal(before.state[parameter]["exp_avg"], after.state[parameter]["exp_avg"])
        assert torch.equal(before.state[parameter]["exp_avg_sq"], after.state[parameter]["exp_avg_sq"])


SMALL_RUN = ["env_id=spikerl/PointReach-v0", "ppo.num_envs=1", "ppo.num_steps=128", "ppo.num_minibatches=4",
             "ppo.update_epochs=2", "network.hidden=[16, 16]", "eval.every=0", "eval.final_episodes=2",
             "progress=false", "threads=1"]


def test_a_run_from_before_the_policy_had_its_own_rate_resumes_and_keeps_annealing(cli, tmp_path):
    """An older checkpoint (one Adam group over policy and value) resumes to the uninterrupted run's files:
    its group is split, and the learning rates go on decaying from the restored optimizer."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    for run_dir in (whole, stopped):
        args = ["configs/pendulum_ppo_snn.yaml", *SMALL_RUN, "total_steps=1024", "checkpoint_every=512", f"run_dir={run_dir}"]
        assert cli("train", *args).returncode == 0
    for name in ("final_model.pt", "final_eval.json"):
        (stopped / name).unlink()  # as if it had been stopped after its checkpoint at step 512
    path = stopped / "checkpoints" / "step_512.pt"
    data = load_checkpoint(path)
    groups = data["components"]["optimizer"]["param_groups"]
    data["components"]["optimizer"]["param_groups"] = [{**groups[1], "params": groups[0]["params"] + groups[1]["params"]}]
    write_checkpoint({k: v for k, v in data.items() if k != "format"}, path)
    for later in (stopped / "checkpoints").glob("step_1024.pt"):
        later.unlink()
    assert cli("train", "--resume", str(stopped)).returncode == 0
    assert (whole / "episodes.csv").read_text() == (stopped / "episodes.csv").read_text()
    assert json.loads((whole / "final_eval.json").read_text())["returns"] == \
        json.loads((stopped / "final_eval.json").read_text())["returns"]


def test_a_pinned_adaptive_rate_steps_as_that_fixed_rate(tmp_path):
    """desired_kl tiny keeps the rate at its floor 1e-5 (every KL after the first minibatch is above it): the
    unit Adam steps scaled by the rate equal Adam run at 1e-5 (not annealed: the adaptive rate never is)."""
    finals = {}
    for name, extra in {"adaptive": ["ppo.desired_kl=1e-12"], "fixed": []}.items():
        cfg = load_config("configs/pendulum_ppo_snn.yaml", [*SMALL_RUN, "total_steps=512", "ppo.policy_learning_rate=1e-5", "ppo.anneal_lr=false",
                                                            "checkpoint_every=0", f"run_dir={tmp_path / name}", *extra])
        train_run(cfg, Run(cfg))
        finals[name] = load_checkpoint(tmp_path / name / "final_model.pt")["policy"]
    for key, value in finals["fixed"].items():
        assert torch.allclose(finals["adaptive"][key], value, atol=1e-7, rtol=0), key


def test_each_agent_of_a_population_adapts_its_own_rate(tmp_path):
    from spikerl.rl.population import seed_configs, train_population

    base = load_config("configs/pendulum_ppo_snn.yaml", [*SMALL_RUN, "total_steps=256", "ppo.desired_kl=0.002",
                                                         "checkpoint_every=128"])
    train_population(tmp_path, seed_configs(base, [0, 1, 2, 3], tmp_path))
    rates = load_checkpoint(tmp_path / "checkpoints" / "step_128.pt")["components"]["policy_rate"]["rate"]
    assert len(set(rates.tolist())) > 1 and all(1e-5 <= r <= 1e-2 for r in rates.tolist())


def test_the_adaptive_rate_follows_the_kl_by_hand():
    rate = ppo.AdaptiveRate(6, 1e-3, desired_kl=0.01)
    rate.rate.copy_(torch.tensor([1e-3, 1e-3, 1e-3, 1e-5, 1e-2, 1e-3], dtype=torch.float64))
    rate.adapt(torch.tensor([0.05, 0.001, 0.015, 0.05, 0.001, 0.0]))
    # above 2 x 0.01: / 1.5; below 0.01 / 2: x 1.5; between: kept; the bounds hold; a KL of 0 (the first
    # minibatch, still the rollout's policy) changes nothing
    expected = torch.tensor([1e-3 / 1.5, 1.5e-3, 1e-3, 1e-5, 1e-2, 1e-3], dtype=torch.float64)
    assert torch.allclose(rate.rate, expected, rtol=1e-12)


def test_adaptive_steps_equal_adam_at_each_agents_own_rate():
    """The reference: one torch Adam per agent at its own learning rate, over a few steps."""
    torch.manual_seed(0)
    start = torch.randn(3, 4, 5)
    targets = [torch.randn(3, 4, 5) for _ in range(4)]
    stacked = torch.nn.Parameter(start.clone())
    rate = ppo.AdaptiveRate(3, 1.0, desired_kl=1.0)
    rate.rate.copy_(torch.tensor([1e-3, 3e-4, 5e-2], dtype=torch.float64))
    adam = torch.optim.Adam([stacked], lr=1.0, eps=1e-5)
    own = [torch.nn.Parameter(start[k].clone()) for k in range(3)]
    adams = [torch.optim.Adam([own[k]], lr=float(rate.rate[k]), eps=1e-5) for k in range(3)]
    for target in targets:
        adam.zero_grad()
        ((stacked - target) ** 3).sum().backward()
        before = [stacked.detach().clone()]
        adam.step()
        rate.scale_steps([stacked], before)
        for k in range(3):
            adams[k].zero_grad()
            ((own[k] - target[k]) ** 3).sum().backward()
            adams[k].step()
    for k in range(3):
        assert torch.allclose(stacked[k], own[k], atol=1e-7, rtol=0), k
        assert not torch.allclose(own[k], start[k], atol=1e-5)
