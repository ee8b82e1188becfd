"""DQN with a spiking (or ANN) Q-network. One file: the network wrapper, the schedule, the target, the update.

The paper's presets set every value as its released code (dsrl) does, its mean squared error loss
included (docs/paper_audit.md). The defaults here are spikerl's: the Huber loss, exponential epsilon
decay per step and hard target copies; double DQN, soft target updates, a linear epsilon schedule,
bursts of updates and learning-rate annealing are options. A time limit is not a termination unless
`truncation_bootstraps: false` (the paper's rule): by default its transition still bootstraps.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spikerl.config import DQNConfig, TrainConfig
from spikerl.rl.loop import TrainingLoop, as_obs_tensor, clip_grad_norm_per_agent
from spikerl.rl.replay import ReplayBuffer
from spikerl.rl.run import CheckpointStore, Run
from spikerl.snn.encoders import ObservationNormalizer, observation_normalizer
from spikerl.snn.network import build_network


class QPolicy(nn.Module):
    """Observation normalization (read, not updated, here) followed by the Q-network; acting is greedy."""

    def __init__(self, cfg: TrainConfig, obs_norm: ObservationNormalizer, n_actions: int,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu"):
        super().__init__()
        self.obs_norm = obs_norm
        self.net = build_network(cfg.network, obs_norm.dim, n_actions, generator, device)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.obs_norm(obs))

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> int:
        return int(self(as_obs_tensor(obs, self.obs_norm.device)).argmax(dim=-1).item())

    @torch.no_grad()
    def act_agents(self, obs: torch.Tensor) -> np.ndarray:
        """Stacked: each agent's greedy action for its observation, obs [K, 1, d] -> [K]."""
        return self(obs).argmax(dim=-1)[:, 0].cpu().numpy()


def make_policy(cfg: TrainConfig, env: gym.Env, device: torch.device | str = "cpu") -> QPolicy:
    obs_norm = observation_normalizer(cfg.network, env.observation_space.shape[0]).to(device)
    return QPolicy(cfg, obs_norm, int(env.action_space.n), device=device)


def epsilon_at(steps_done: int, d: DQNConfig) -> float:
    """Epsilon after `steps_done` environment steps: the first action is taken at epsilon_start."""
    if d.epsilon_schedule == "exponential":  # dsrl: epsilon *= decay after every step
        return max(d.epsilon_end, d.epsilon_start * d.epsilon_decay**steps_done)
    fraction = min(steps_done / d.epsilon_decay_steps, 1.0)
    return d.epsilon_start + fraction * (d.epsilon_end - d.epsilon_start)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q_target: torch.Tensor, gamma: float | torch.Tensor,
              next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """r + gamma (1 - terminated) Q'(s', a*): a* = argmax Q'(s', .), or with `next_q_online` (double DQN)
    argmax Q(s', .), the online network choosing and the target network valuing."""
    if next_q_online is None:
        next_value = next_q_target.max(dim=-1).values
    else:
        next_value = next_q_target.gather(-1, next_q_online.argmax(dim=-1, keepdim=True)).squeeze(-1)
    return rewards + gamma * next_value * (1.0 - terminated)


def train(cfgs: list[TrainConfig], runs: list[Run | None], store: CheckpointStore,
          checkpoint: dict | None = None) -> list[dict | None]:
    """Train agents `cfgs` (a population; one config is an ordinary run) from scratch or from `checkpoint`."""
    d = cfgs[0].dqn  # what agents share; per agent: gamma and the epsilon schedule
    # Seeding: each agent's networks, environment, action space and generators from its own seed (the loop).
    loop = TrainingLoop(cfgs, runs, store)
    device, agents, n_actions = loop.device, loop.agents, int(loop.action_space.n)

    (q_net,) = loop.build(lambda agent, norm: (QPolicy(agent.cfg, norm, n_actions, agent.membrane_generator, device),))
    target_net = copy.deepcopy(q_net)  # same weights and the same drawn membrane parameters
    loop.share_normalizer(target_net)  # one normalizer: targets see what the online net sees
    optimizer = torch.optim.Adam(q_net.parameters(), lr=d.learning_rate)  # elementwise: one Adam per agent
    buffer = ReplayBuffer(d.buffer_size, loop.observation_space.shape[0], (), np.int64, agents=loop.size)
    gamma = loop.per_agent(lambda cfg: cfg.dqn.gamma)
    rngs = [agent.rng for agent in agents]
    loss_fn = F.smooth_l1_loss if d.loss == "huber" else F.mse_loss
    loop.backends = {"q_net": q_net.net.backend}

    step, obs = loop.begin(checkpoint, policy=q_net, buffer=buffer,
                           components={"q_net": q_net, "target_net": target_net, "optimizer": optimizer})
    for step in loop.remaining_steps(step):
        epsilons = [epsilon_at(step - 1, agent.cfg.dqn) for agent in agents]
        explore = [agent.active and agent.rng.random() < epsilon for agent, epsilon in zip(agents, epsilons)]
        greedy = q_net.act_agents(loop.obs_tensor(obs)) if not all(explore) else None
        actions = [int(agent.env.action_space.sample()) if explore[agent.index] else int(greedy[agent.index])
                   for agent in agents]
        obs = loop.env_step(step, obs, actions)

        if step > d.learning_starts and step % d.train_every == 0:
            if d.anneal_lr:
                optimizer.param_groups[0]["lr"] = d.learning_rate * (1.0 - (step - 1) / loop.cfg.total_steps)
            for _ in range(d.gradient_steps):
                b_obs, b_actions, b_rewards, b_next_obs, b_terminated = buffer.sample(d.batch_size, rngs, device)
                with torch.no_grad():
                    target = td_target(b_rewards, b_terminated, target_net(b_next_obs), gamma,
                                       q_net(b_next_obs) if d.double else None)
                q_taken = q_net(b_obs).gather(-1, b_actions.unsqueeze(-1)).squeeze(-1)
                losses = loss_fn(q_taken, target, reduction="none").mean(dim=-1)  # one per agent
                loop.check_finite(step, "losses/td_loss", losses)
                optimizer.zero_grad()
                losses.sum().backward()  # each agent's gradient is its own loss's
                if d.max_grad_norm is not None:
                    clip_grad_norm_per_agent(q_net.parameters(), d.max_grad_norm)
                optimizer.step()
            if step % 100 < d.train_every:
                for agent, loss, q in zip(agents, losses.tolist(), q_taken.mean(dim=-1).tolist()):
                    if agent.active:
                        agent.run.log_scalars(step, {"losses/td_loss": loss, "losses/q_values": q,
                                                     "charts/epsilon": epsilons[agent.index]})

        if d.target_update == "hard" and step % d.target_update_every == 0:
            target_net.load_state_dict(q_net.state_dict())
        elif d.target_update == "soft":
            with torch.no_grad():
                for p_target, p in zip(target_net.parameters(), q_net.parameters()):
                    p_target.lerp_(p, d.tau)

        if loop.after_step(step, obs):
            break
    return loop.finish(step)
