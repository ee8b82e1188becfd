"""Agent pieces: epsilon schedules, spiking critics, soft targets, replay buffer."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from spikerl.config import DQNConfig, load_config
from spikerl.rl import dqn, td3, train_run
from spikerl.rl.evaluate import best_moving_average
from spikerl.rl.replay import ReplayBuffer
from spikerl.rl.run import Run
from spikerl.snn.network import ANNMLP, SpikingMLP
from tests.conftest import newest_checkpoint


def test_exponential_epsilon_multiplies_per_step_down_to_the_floor():
    d = DQNConfig(epsilon_schedule="exponential", epsilon_start=1.0, epsilon_end=0.05, epsilon_decay=0.999)
    assert dqn.epsilon_at(0, d) == 1.0
    assert dqn.epsilon_at(1000, d) == pytest.approx(0.999**1000)
    assert dqn.epsilon_at(10_000, d) == 0.05


def test_linear_epsilon_reaches_the_floor_at_the_decay_steps():
    d = DQNConfig(epsilon_schedule="linear", epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=1000)
    assert dqn.epsilon_at(500, d) == pytest.approx(0.55)
    assert dqn.epsilon_at(1000, d) == pytest.approx(0.1) and dqn.epsilon_at(5000, d) == pytest.approx(0.1)


def test_best_moving_average_by_hand():
    # Windows of 3: means 2, 5, 13/3, 10/3; the best ends at episode 4.
    assert best_moving_average([1, 2, 3, 10, 0, 0], window=3) == (5.0, 4)
    assert best_moving_average([7, 7, 7], window=3) == (7.0, 3)  # ties: the first window reaching it
    assert best_moving_average([1, 2], window=3) is None  # fewer episodes than one window


def test_replay_buffer_wraps_around_and_samples_what_was_stored():
    buf = ReplayBuffer(3, obs_dim=1, action_shape=(2,), agents=2)  # agent 1 stores the negatives of agent 0
    for i in range(5):
        buf.add([[i], [-i]], [[i, -i], [-i, i]], [float(i), -float(i)], [[i + 1], [-i - 1]], [i == 4, i == 4])
    assert buf.size == 3 and sorted(buf.obs[0, :, 0].tolist()) == [2.0, 3.0, 4.0]
    obs, actions, rewards, next_obs, terminated = buf.sample(64, [np.random.default_rng(0), np.random.default_rng(1)])
    assert obs.shape == (2, 64, 1) and actions.shape == (2, 64, 2)
    assert set(obs[0, :, 0].tolist()) == {2.0, 3.0, 4.0} and set(obs[1, :, 0].tolist()) == {-2.0, -3.0, -4.0}
    assert not torch.equal(obs[0], -obs[1])  # each agent's own indices
    assert torch.equal(actions[..., 0], obs[..., 0]) and torch.equal(rewards, obs[..., 0])
    assert torch.equal(next_obs[..., 0], obs[..., 0] + torch.tensor([[1.0], [-1.0]]))
    assert torch.equal(terminated, (obs[..., 0].abs() == 4).float())
    # Each agent's sample is what a buffer of its own gives with the same generator.
    alone = ReplayBuffer(3, obs_dim=1, action_shape=(2,))
    for i in range(5):
        alone.add([[-i]], [[-i, i]], [-float(i)], [[-i - 1]], [i == 4])
    assert torch.equal(alone.sample(64, [np.random.default_rng(1)])[0][0], obs[1])


def test_td3_with_a_spiking_critic_trains(tmp_path):
    cfg = load_config("configs/pendulum_td3_snn.yaml", [
        "total_steps=250", "td3.learning_starts=100", "td3.batch_size=16", "network.hidden=[16, 16]",
        "td3.critic.kind=snn", "td3.critic.hidden=[16, 16]", "td3.critic.encoder=two_neuron",
        "eval.every=0", "eval.final_episodes=1", "checkpoint_every=200", f"run_dir={tmp_path / 'run'}", "progress=false"])
    result = train_run(cfg, Run(cfg))
    assert result["global_step"] == 250
    critics = newest_checkpoint(tmp_path / "run")["components"]
    assert any(k.startswith("net.neurons") for k in critics["critic1"])  # the critic is spiking
    assert not torch.equal(critics["critic1"]["net.layers.0.weight"], critics["critic2"]["net.layers.0.weight"])


@pytest.mark.parametrize("bootstraps", [True, False])
def test_a_time_limit_ends_the_return_only_when_asked(tmp_path, bootstraps):
    # PointReach never terminates and is cut at 40 steps: only the cut transitions can be marked terminal.
    cfg = load_config("configs/pendulum_td3_snn.yaml", [
        "env_id=spikerl/PointReach-v0", "total_steps=100", "td3.learning_starts=100", "network.hidden=[8, 8]",
        "td3.critic.hidden=[8, 8]", "eval.every=0", "eval.final_episodes=1", "checkpoint_every=80",
        f"truncation_bootstraps={str(bootstraps).lower()}", f"run_dir={tmp_path / 'run'}", "progress=false"])
    train_run(cfg, Run(cfg))
    buffer = newest_checkpoint(tmp_path / "run")["buffer"]
    ended = np.flatnonzero(np.asarray(buffer["terminated"])[:80])
    assert ended.tolist() == ([] if bootstraps else [39, 79])


def test_network_kind_switch_swaps_the_whole_network():
    snn = load_config("configs/cartpole_dqn_snn.yaml")
    ann = load_config("configs/cartpole_dqn_ann.yaml")
    env = gym.make("CartPole-v1")
    assert isinstance(dqn.make_policy(snn, env).net, SpikingMLP)
    assert isinstance(dqn.make_policy(ann, env).net, ANNMLP)


def test_dqn_soft_target_updates_and_double_q_run(tmp_path):
    cfg = load_config("configs/cartpole_dqn_snn.yaml", [
        "total_steps=400", "dqn.learning_starts=100", "dqn.batch_size=16", "dqn.double=true", "dqn.target_update=soft",
        "dqn.tau=0.5", "eval.every=0", "eval.final_episodes=1", "checkpoint_every=300", f"run_dir={tmp_path / 'run'}",
        "progress=false"])
    train_run(cfg, Run(cfg))
    nets = newest_checkpoint(tmp_path / "run")["components"]
    online, target = nets["q_net"]["net.layers.1.weight"], nets["target_net"]["net.layers.1.weight"]
    # tau = 0.5 per step: the target trails the online net closely but is not a copy.
    assert not torch.equal(online, target)
    assert (online - target).abs().max() < 0.05


def test_dqn_gradient_clip_trains_and_binds(tmp_path):
    def trained_weights(name: str, *overrides: str) -> torch.Tensor:
        cfg = load_config("configs/cartpole_dqn_snn.yaml", [
            "total_steps=400", "dqn.learning_starts=100", "dqn.batch_size=16", "eval.every=0",
            "eval.final_episodes=1", "checkpoint_every=300", f"run_dir={tmp_path / name}", "progress=false", *overrides])
        train_run(cfg, Run(cfg))
        return newest_checkpoint(tmp_path / name)["components"]["q_net"]["net.layers.1.weight"]

    unclipped = trained_weights("unclipped")
    assert torch.equal(trained_weights("loose", "dqn.max_grad_norm=1e6"), unclipped)  # never binds: no change
    assert not torch.equal(trained_weights("tight", "dqn.max_grad_norm=1e-3"), unclipped)


def test_random_input_spikes_leave_evaluation_deterministic_and_training_unchanged_by_it(tmp_path):
    from spikerl.deploy.energy import check_energy_applies
    from spikerl.errors import SpikerlError
    from spikerl.rl.evaluate import evaluate, load_policy

    def trained(name: str, *overrides: str):
        cfg = load_config("configs/cartpole_dqn_snn.yaml", [
            "network.encoder=poisson", "total_steps=400", "dqn.learning_starts=100", "dqn.batch_size=16",
            "eval.episodes=2", "eval.final_episodes=2", "checkpoint_every=300", f"run_dir={tmp_path / name}",
            "progress=false", *overrides])
        train_run(cfg, Run(cfg))
        return newest_checkpoint(tmp_path / name)["components"]["q_net"]

    # Evaluations draw spikes from generators of their own: training's draws, and so its weights, do not
    # depend on how often it evaluated
    never, often = trained("never", "eval.every=0"), trained("often", "eval.every=100")
    assert all(torch.equal(never[k], often[k]) for k in never)
    # ...and the same evaluation sees the same spikes: the same Q-values at every step, whatever was drawn before
    _, policy = load_policy(tmp_path / "never")
    q_values = []
    policy.net.register_forward_hook(lambda module, inputs, output: q_values.append(output.detach().clone()))

    def evaluation_q_values() -> list[torch.Tensor]:
        q_values.clear()
        evaluate(policy.act, "CartPole-v0", 2, 10_000)
        return list(q_values)

    first = evaluation_q_values()
    torch.rand(5)  # a draw between evaluations moves nothing
    second = evaluation_q_values()
    assert len(first) == len(second) > 10 and all(torch.equal(a, b) for a, b in zip(first, second))
    # spikerl energy's counts assume a constant input current: a Poisson encoder's network is refused in one line
    with pytest.raises(SpikerlError, match="spikerl energy counts networks with a constant input current"):
        check_energy_applies(policy.net)


def test_dqn_target_by_hand_plain_and_double():
    rewards, terminated = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])
    next_q_target = torch.tensor([[2.0, 5.0, 1.0], [4.0, 0.0, 3.0]])
    next_q_online = torch.tensor([[0.0, 0.0, 9.0], [1.0, 0.0, 0.0]])  # online prefers action 2, then action 0
    # plain: 1 + 0.9 * 5 = 5.5; terminal: 0.5
    assert dqn.td_target(rewards, terminated, next_q_target, 0.9).tolist() == pytest.approx([5.5, 0.5])
    # double: the online net's choice (action 2) valued by the target net: 1 + 0.9 * 1 = 1.9; terminal: 0.5
    assert dqn.td_target(rewards, terminated, next_q_target, 0.9, next_q_online).tolist() == pytest.approx([1.9, 0.5])


def test_td3_target_smoothing_and_clipped_double_q_by_hand():
    scale, offset = torch.tensor([2.0, 0.5]), torch.tensor([0.0, 0.5])  # boxes [-2, 2] and [0, 1]
    target_actions = torch.tensor([[1.0, 0.2], [1.9, 0.9]])
    noise = torch.tensor([[0.3, -0.9], [0.7, 0.1]])  # clipped to +-0.5, then scaled by the bound
    smoothed = td3.smoothed_target_actions(target_actions, noise, 0.5, scale, offset)
    # row 0: 1 + 0.3 * 2 = 1.6; 0.2 - 0.5 * 0.5 = -0.05 -> clipped to 0.   row 1: 1.9 + 1.0 = 2.9 -> 2; 0.9 + 0.05 = 0.95
    assert torch.allclose(smoothed, torch.tensor([[1.6, 0.0], [2.0, 0.95]]))
    rewards, terminated = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])
    target = td3.td_target(rewards, terminated, torch.tensor([3.0, 7.0]), torch.tensor([2.0, 9.0]), 0.99)
    assert target.tolist() == pytest.approx([1.0 + 0.99 * 2.0, -1.0])
