"""SAC: the soft target, the temperature update and the squashed Gaussian's log-probability by hand; learning."""

import math

import gymnasium as gym
import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from spikerl.config import load_config
from spikerl.rl import sac, train_run
from spikerl.rl.evaluate import evaluate
from spikerl.rl.run import Run
from tests.conftest import assert_policy_commands_read


def test_soft_q_target_by_hand():
    rewards, terminated = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    q1, q2 = torch.tensor([10.0, 5.0]), torch.tensor([8.0, 9.0])
    next_log_prob = torch.tensor([-2.0, 3.0])
    # Row 0: 1 + 0.9 (min(10, 8) - 0.5 * -2) = 1 + 0.9 * 9 = 9.1. Row 1 ends: 2.
    target = sac.soft_q_target(rewards, terminated, q1, q2, next_log_prob, 0.5, 0.9)
    assert torch.allclose(target, torch.tensor([9.1, 2.0]))


def test_temperature_shrinks_while_the_entropy_is_above_target():
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    log_prob = torch.tensor([-1.0, -3.0])  # entropy about 2, target -1: too random, alpha must fall
    loss = sac.temperature_loss(log_alpha, log_prob, target_entropy=-1.0)
    # J = -alpha * mean(log_prob + target) = -0.5 * mean(-2, -4) = 1.5; dJ/dlog_alpha = J as well.
    loss.backward()
    assert loss.item() == pytest.approx(1.5) and log_alpha.grad.item() == pytest.approx(1.5)
    below = sac.temperature_loss(torch.tensor(0.0), torch.tensor([2.0]), target_entropy=-1.0)
    assert below.item() == pytest.approx(-1.0)  # entropy -2 below target -1: the loss falls as alpha grows


def test_the_squashed_gaussian_log_probability_matches_torch_distributions():
    cfg = load_config("configs/pendulum_sac_snn.yaml", ["network.hidden=[16, 16]"])
    actor = sac.make_policy(cfg, gym.make("Pendulum-v1"))
    obs = torch.randn(64, 3)
    actor.obs_norm.update(obs)
    torch.manual_seed(0)
    actions, log_prob = actor.sample(obs, torch.randn(64, 1))
    mean, log_std = actor.mean_and_log_std(obs)
    assert log_std.min().item() >= cfg.sac.log_std_min and log_std.max().item() <= cfg.sac.log_std_max
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [
        TanhTransform(), AffineTransform(actor.action_offset, actor.action_scale)])
    inside = (actions.abs() < 1.99).all(dim=1)  # away from the bound, where tanh's inverse is exact
    expected = reference.log_prob(actions).sum(dim=1)
    assert inside.sum() > 10
    assert torch.allclose(log_prob[inside], expected[inside], atol=2e-3)
    assert torch.equal(actor(obs), actor.action_scale * torch.tanh(mean) + actor.action_offset)


@pytest.mark.slow
def test_spiking_sac_learns_point_reach(tmp_path):
    cfg = load_config("configs/pendulum_sac_snn.yaml", [
        "env_id=spikerl/PointReach-v0", "total_steps=3000", "network.hidden=[64, 64]", "sac.critic.hidden=[64, 64]",
        "sac.learning_starts=500", "sac.batch_size=64", "eval.every=1000", "eval.episodes=10", "checkpoint_every=0",
        f"run_dir={tmp_path / 'run'}", "progress=false"])
    untrained = sac.make_policy(cfg, gym.make("spikerl/PointReach-v0"))
    before = evaluate(untrained.act, cfg.env_id, 20, cfg.eval.seed)["mean_return"]
    result = train_run(cfg, Run(cfg))
    # Standing still scores about -24, the best policy about -0.7.
    assert before < -15
    assert result["mean_return"] >= -14, result


def test_a_sac_policy_evaluates_exports_to_nir_quantizes_and_counts_energy(cli, tmp_path):
    run_dir = tmp_path / "run"
    trained = cli("train", "configs/pendulum_sac_snn.yaml", "env_id=spikerl/PointReach-v0", "total_steps=300",
                  "sac.learning_starts=100", "sac.batch_size=16", "network.hidden=[16, 16]", "sac.critic.hidden=[16, 16]",
                  "eval.every=0", "eval.final_episodes=3", f"run_dir={run_dir}", "progress=false")
    assert trained.returncode == 0, trained.stderr
    assert_policy_commands_read(cli, run_dir, tmp_path)
