"""Reinforcement learning: DQN, TD3 and SAC with spiking or ANN networks, environments, evaluation, runs."""

import importlib


def algorithm_module(name: str):
    """The module (dqn, td3 or sac) whose `train(cfg, run, checkpoint)` trains `name`; imported on demand."""
    return importlib.import_module(f"spikerl.rl.{name}")
