"""Reinforcement learning: DQN, TD3, SAC and PPO with spiking or ANN networks, environments, evaluation, runs."""

from __future__ import annotations

import importlib


def algorithm_module(name: str):
    """The module (dqn, td3, sac or ppo) whose `train(cfgs, runs, store, checkpoint)` trains `name`; imported on demand."""
    return importlib.import_module(f"spikerl.rl.{name}")


def train_run(cfg, run, checkpoint: dict | None = None) -> dict:
    """Train one run (a population of one, through the one training loop); its final result."""
    return algorithm_module(cfg.algo).train([cfg], [run], run.store, checkpoint)[0]
