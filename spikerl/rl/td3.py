"""TD3 (Fujimoto et al. 2018) with a spiking (or ANN) actor and ANN (or spiking) twin critics. One file.

Follows the TD3 paper where dsrl departs from it: Gaussian exploration noise per action dimension,
uniform random actions during warm-up, target smoothing noise per sample and dimension, and a
time-limit truncation that still bootstraps (only true termination cuts the return).
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spikerl.config import NetworkConfig, TrainConfig
from spikerl.rl.loop import TrainingLoop, as_obs_tensor
from spikerl.rl.replay import ReplayBuffer
from spikerl.rl.run import CheckpointStore, Run
from spikerl.snn.encoders import ObservationNormalizer, observation_normalizer
from spikerl.snn.network import build_network


class Actor(nn.Module):
    """action = scale * tanh(net(normalized obs)) + offset, mapping onto the action box."""

    def __init__(self, cfg: TrainConfig, obs_norm: ObservationNormalizer, action_space: gym.spaces.Box,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu", outputs_per_dimension: int = 1):
        super().__init__()
        self.obs_norm = obs_norm
        self.net = build_network(cfg.network, obs_norm.dim, outputs_per_dimension * action_space.shape[0],
                                 generator, device)
        low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (action_space.low, action_space.high))
        self.register_buffer("action_scale", ((high - low) / 2.0).to(device))
        self.register_buffer("action_offset", ((high + low) / 2.0).to(device))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_scale * torch.tanh(self.net(self.obs_norm(obs))) + self.action_offset

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        return self(as_obs_tensor(obs, self.action_scale.device))[0].cpu().numpy()

    @torch.no_grad()
    def act_agents(self, obs: torch.Tensor) -> np.ndarray:
        """Stacked: each agent's action for its observation, obs [K, 1, d] -> [K, action_dim]."""
        return self(obs)[:, 0].cpu().numpy()


class Critic(nn.Module):
    """Q(s, a) on the same normalized observation as the actor; the input is [obs, action]."""

    def __init__(self, net_cfg: NetworkConfig, obs_norm: ObservationNormalizer, action_dim: int, generator=None,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.obs_norm = obs_norm
        self.net = build_network(net_cfg, obs_norm.dim + action_dim, 1, generator, device)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.obs_norm(obs), action], dim=-1)).squeeze(-1)


def twin_critics(net_cfg: NetworkConfig, obs_norm: ObservationNormalizer, action_dim: int, generator: torch.Generator | None,
                 device: torch.device | str) -> tuple[Critic, Critic]:
    """The two critics of clipped double Q-learning, reading the actor's normalizer."""
    return tuple(Critic(net_cfg, obs_norm, action_dim, generator, device) for _ in range(2))


def critic_targets(loop: TrainingLoop, critics: tuple[nn.Module, nn.Module], learning_rate: float):
    """Target copies of the (stacked) critics, reading the population's normalizer, and one Adam over both critics."""
    targets = [copy.deepcopy(critic) for critic in critics]
    for target in targets:
        loop.share_normalizer(target)
    optimizer = torch.optim.Adam([p for critic in critics for p in critic.net.parameters()], lr=learning_rate)
    return targets, optimizer


def make_policy(cfg: TrainConfig, env: gym.Env, device: torch.device | str = "cpu") -> Actor:
    obs_norm = observation_normalizer(cfg.network, env.observation_space.shape[0]).to(device)
    return Actor(cfg, obs_norm, env.action_space, device=device)


def smoothed_target_actions(target_actions: torch.Tensor, noise: torch.Tensor, noise_clip: float,
                            scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Target policy smoothing: a' = clip(mu'(s') + clip(noise, -c, c) * scale, low, high), the noise drawn
    per sample and action dimension in units of the action bound."""
    smoothed = target_actions + noise.clamp(-noise_clip, noise_clip) * scale
    return torch.max(torch.min(smoothed, offset + scale), offset - scale)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor,
              gamma: float | torch.Tensor) -> torch.Tensor:
    """Clipped double Q-learning: r + gamma (1 - terminated) min(Q1'(s', a'), Q2'(s', a'))."""
    return rewards + gamma * (1.0 - terminated) * torch.min(q1, q2)


def train(cfgs: list[TrainConfig], runs: list[Run | None], store: CheckpointStore,
          checkpoint: dict | None = None) -> list[dict | None]:
    """Train agents `cfgs` (a population; one config is an ordinary run) from scratch or from `checkpoint`."""
    t = cfgs[0].td3  # what agents share; per agent: gamma and the exploration noise
    # Seeding: each agent's networks, environment, action space and generators from its own seed (the loop).
    loop = TrainingLoop(cfgs, runs, store)
    device, agents, action_space = loop.device, loop.agents, loop.action_space
    action_dim = action_space.shape[0]

    actor, critic1, critic2 = loop.build(lambda agent, norm: (
        Actor(agent.cfg, norm, action_space, agent.membrane_generator, device),
        *twin_critics(t.critic, norm, action_dim, agent.membrane_generator, device)))
    (critic1_target, critic2_target), critic_optimizer = critic_targets(loop, (critic1, critic2), t.critic_learning_rate)
    actor_target = copy.deepcopy(actor)
    loop.share_normalizer(actor_target)  # one normalizer for every network, as dsrl's critic input
    actor_optimizer = torch.optim.Adam(actor.net.parameters(), lr=t.actor_learning_rate)
    buffer = ReplayBuffer(t.buffer_size, loop.observation_space.shape[0], (action_dim,), agents=loop.size)
    scale, offset = actor.action_scale, actor.action_offset
    scale_np, low, high = scale[0, 0].cpu().numpy(), action_space.low, action_space.high
    gamma = loop.per_agent(lambda cfg: cfg.td3.gamma)
    rngs = [agent.rng for agent in agents]
    loop.backends = {"actor": actor.net.backend, "critic": critic1.net.backend}

    step, obs = loop.begin(checkpoint, policy=actor, buffer=buffer, components={
        "actor": actor, "critic1": critic1, "critic2": critic2, "actor_target": actor_target,
        "critic1_target": critic1_target, "critic2_target": critic2_target,
        "actor_optimizer": actor_optimizer, "critic_optimizer": critic_optimizer})
    for step in loop.remaining_steps(step):
        if step <= t.learning_starts:
            actions = loop.random_actions()
        else:
            greedy = actor.act_agents(loop.obs_tensor(obs))
            actions = [np.clip(greedy[a.index] + a.rng.normal(0.0, a.cfg.td3.exploration_noise, size=action_dim)
                               * scale_np, low, high).astype(np.float32) if a.active else greedy[a.index] for a in agents]
        obs = loop.env_step(step, obs, actions)

        if step > t.learning_starts:
            b_obs, b_actions, b_rewards, b_next_obs, b_terminated = buffer.sample(t.batch_size, rngs, device)
            with torch.no_grad():
                noise = loop.normal(tuple(b_actions.shape[1:])) * t.target_noise
                next_actions = smoothed_target_actions(actor_target(b_next_obs), noise, t.target_noise_clip, scale, offset)
                target = td_target(b_rewards, b_terminated, critic1_target(b_next_obs, next_actions),
                                   critic2_target(b_next_obs, next_actions), gamma)
            q1, q2 = critic1(b_obs, b_actions), critic2(b_obs, b_actions)
            critic_losses = (F.mse_loss(q1, target, reduction="none").mean(dim=-1)
                             + F.mse_loss(q2, target, reduction="none").mean(dim=-1))  # one per agent
            loop.check_finite(step, "losses/critic_loss", critic_losses)
            critic_optimizer.zero_grad()
            critic_losses.sum().backward()  # each agent's gradient is its own loss's
            critic_optimizer.step()

            if step % t.policy_delay == 0:
                actor_losses = -critic1(b_obs, actor(b_obs)).mean(dim=-1)
                loop.check_finite(step, "losses/actor_loss", actor_losses)
                actor_optimizer.zero_grad()
                actor_losses.sum().backward()
                actor_optimizer.step()
                with torch.no_grad():
                    for net, target_net in ((actor, actor_target), (critic1, critic1_target), (critic2, critic2_target)):
                        for p, p_target in zip(net.net.parameters(), target_net.net.parameters()):
                            p_target.lerp_(p, t.tau)
                if step % 100 == 0:
                    for agent, critic_loss, actor_loss, q in zip(agents, critic_losses.tolist(), actor_losses.tolist(),
                                                                 q1.mean(dim=-1).tolist()):
                        if agent.active:
                            agent.run.log_scalars(step, {"losses/critic_loss": critic_loss / 2,
                                                         "losses/actor_loss": actor_loss, "losses/q_values": q})

        if loop.after_step(step, obs):
            break
    return loop.finish(step)
