"""Spiking agents actually learn small tasks (real training, small budgets; tens of seconds each)."""

import json

import gymnasium as gym
import pytest

from spikerl.config import load_config
from spikerl.rl import dqn, td3, train_run
from spikerl.rl.evaluate import evaluate
from spikerl.rl.run import Run

pytestmark = pytest.mark.slow


def train(cfg, tmp_path):
    cfg.run_dir, cfg.progress = str(tmp_path / "run"), False
    algorithm = dqn if cfg.algo == "dqn" else td3
    return train_run(cfg, Run(cfg))


def test_spiking_dqn_learns_cartpole(tmp_path):
    # The quick-start preset as it is (its learning-rate schedule depends on total_steps), stopped early.
    cfg = load_config("configs/cartpole_dqn_quickstart.yaml", ["eval.stop_at_return=150", "checkpoint_every=0"])
    result = train(cfg, tmp_path)
    # A random policy balances for about 22 steps; the trained spiking agent for 150+ (seed 0: 169.9 at 4k steps).
    assert result["best_eval_mean_return"] >= 150, result
    assert result["global_step"] <= 20000, result
    summary = json.loads((tmp_path / "run" / "final_eval.json").read_text())
    assert summary["best_eval_mean_return"] == result["best_eval_mean_return"]


def test_spiking_td3_learns_point_reach(tmp_path):
    cfg = load_config("configs/pendulum_td3_snn.yaml", [
        "env_id=spikerl/PointReach-v0", "total_steps=3000", "network.hidden=[64, 64]", "td3.critic.hidden=[64, 64]",
        "td3.learning_starts=500", "td3.batch_size=64", "eval.every=1000", "eval.episodes=10", "checkpoint_every=0"])
    untrained = td3.make_policy(cfg, gym.make("spikerl/PointReach-v0"))
    before = evaluate(untrained.act, cfg.env_id, 20, cfg.eval.seed)["mean_return"]
    result = train(cfg, tmp_path)
    # Standing still scores about -24, the best policy about -0.7, the untrained actor about -28.
    assert before < -20
    assert result["mean_return"] >= -14, result
