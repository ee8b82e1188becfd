"""Reinforcement learning: DQN and TD3 with spiking or ANN networks, environments, evaluation, runs."""


def algorithm_module(name: str):
    """The module (dqn or td3) whose `train(cfg, run, checkpoint)` trains `name`; imported on demand."""
    if name == "dqn":
        from spikerl.rl import dqn

        return dqn
    from spikerl.rl import td3

    return td3
