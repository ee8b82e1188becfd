"""Reinforcement learning: DQN and TD3 with spiking or ANN networks, environments, evaluation, runs."""
