"""SAC (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications": automatic entropy tuning, twin
Q critics, Polyak-averaged target critics) with a spiking (or ANN) actor. One file.

The actor's readout gives, per action dimension, the mean and the log-std of a Gaussian; a sample u is
squashed, a = scale * tanh(u) + offset. The log-std is bounded smoothly into [log_std_min, log_std_max]
as CleanRL and Stable-Baselines3 do. Evaluation acts with the squashed mean. As in TD3, the critics are
ANNs by default (a spiking critic is an option), warm-up actions are uniform, and a time limit
bootstraps unless `truncation_bootstraps: false`.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from spikerl.config import TrainConfig
from spikerl.rl.loop import TrainingLoop
from spikerl.rl.replay import ReplayBuffer
from spikerl.rl.run import CheckpointStore, Run
from spikerl.rl.td3 import Actor, critic_targets, td_target, twin_critics
from spikerl.snn.encoders import ObservationNormalizer, observation_normalizer


class GaussianActor(Actor):
    """u ~ N(mean, std), a = scale * tanh(u) + offset; `forward` (and so `act`) is the deterministic action
    scale * tanh(mean) + offset. TD3's actor with two readouts per action dimension: mean, then log-std."""

    def __init__(self, cfg: TrainConfig, obs_norm: ObservationNormalizer, action_space: gym.spaces.Box,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu"):
        super().__init__(cfg, obs_norm, action_space, generator, device, outputs_per_dimension=2)
        self.log_std_min, self.log_std_max = cfg.sac.log_std_min, cfg.sac.log_std_max

    def mean_and_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(self.obs_norm(obs)).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        return mean, log_std

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action u = mean + std * noise (standard normal `noise`, the mean's shape,
        drawn by the caller from the agent's generator) and its log-probability (tanh's change of
        variables included)."""
        mean, log_std = self.mean_and_log_std(obs)
        u = mean + log_std.exp() * noise
        squashed = torch.tanh(u)
        log_prob = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
                    - torch.log(self.action_scale * (1.0 - squashed.pow(2)) + 1e-6)).sum(dim=-1)
        return self.action_scale * squashed + self.action_offset, log_prob

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_scale * torch.tanh(self.mean_and_log_std(obs)[0]) + self.action_offset


def make_policy(cfg: TrainConfig, env: gym.Env, device: torch.device | str = "cpu") -> GaussianActor:
    obs_norm = observation_normalizer(cfg.network, env.observation_space.shape[0]).to(device)
    return GaussianActor(cfg, obs_norm, env.action_space, device=device)


def soft_q_target(rewards: torch.Tensor, terminated: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor,
                  next_log_prob: torch.Tensor, alpha: torch.Tensor | float, gamma: float | torch.Tensor) -> torch.Tensor:
    """r + gamma (1 - terminated) (min(Q1'(s', a'), Q2'(s', a')) - alpha log pi(a' | s')), a' ~ pi(. | s')."""
    return td_target(rewards, terminated, q1 - alpha * next_log_prob, q2 - alpha * next_log_prob, gamma)


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """J(alpha) = E[-alpha (log pi(a | s) + target entropy)]: alpha grows while the policy's entropy is below
    target. Per agent: log_alpha [K, 1], log_prob [K, B] -> [K] (one agent: a scalar and [B] -> a scalar)."""
    return (-log_alpha.exp() * (log_prob.detach() + target_entropy)).mean(dim=-1)


def train(cfgs: list[TrainConfig], runs: list[Run | None], store: CheckpointStore,
          checkpoint: dict | None = None) -> list[dict | None]:
    """Train agents `cfgs` (a population; one config is an ordinary run) from scratch or from `checkpoint`."""
    a = cfgs[0].sac  # what agents share; per agent: gamma and the initial temperature
    # Seeding: each agent's networks, environment, action space and generators from its own seed (the loop).
    loop = TrainingLoop(cfgs, runs, store)
    device, agents, action_space = loop.device, loop.agents, loop.action_space
    action_dim = action_space.shape[0]

    actor, critic1, critic2 = loop.build(lambda agent, norm: (
        GaussianActor(agent.cfg, norm, action_space, agent.membrane_generator, device),
        *twin_critics(a.critic, norm, action_dim, agent.membrane_generator, device)))
    (critic1_target, critic2_target), critic_optimizer = critic_targets(loop, (critic1, critic2), a.critic_learning_rate)
    actor_optimizer = torch.optim.Adam(actor.net.parameters(), lr=a.actor_learning_rate)
    log_alpha = torch.tensor([[math.log(agent.cfg.sac.alpha)] for agent in agents], device=device)  # [K, 1]
    temperature = nn.ParameterDict({"log_alpha": nn.Parameter(log_alpha)})
    alpha_optimizer = torch.optim.Adam(temperature.parameters(), lr=a.alpha_learning_rate or a.critic_learning_rate)
    target_entropy = -float(action_dim) if a.target_entropy is None else a.target_entropy
    buffer = ReplayBuffer(a.buffer_size, loop.observation_space.shape[0], (action_dim,), agents=loop.size)
    gamma = loop.per_agent(lambda cfg: cfg.sac.gamma)
    rngs = [agent.rng for agent in agents]
    loop.backends = {"actor": actor.net.backend, "critic": critic1.net.backend}

    step, obs = loop.begin(checkpoint, policy=actor, buffer=buffer, components={
        "actor": actor, "critic1": critic1, "critic2": critic2, "critic1_target": critic1_target,
        "critic2_target": critic2_target, "temperature": temperature, "actor_optimizer": actor_optimizer,
        "critic_optimizer": critic_optimizer, "alpha_optimizer": alpha_optimizer})
    for step in loop.remaining_steps(step):
        if step <= a.learning_starts:
            actions = loop.random_actions()
        else:
            with torch.no_grad():
                actions = actor.sample(loop.obs_tensor(obs), loop.normal((1, action_dim)))[0][:, 0].cpu().numpy()
        obs = loop.env_step(step, obs, actions)

        if step > a.learning_starts:
            alpha = temperature["log_alpha"].exp().detach()  # [K, 1]
            b_obs, b_actions, b_rewards, b_next_obs, b_terminated = buffer.sample(a.batch_size, rngs, device)
            with torch.no_grad():
                next_actions, next_log_prob = actor.sample(b_next_obs, loop.normal((a.batch_size, action_dim)))
                target = soft_q_target(b_rewards, b_terminated, critic1_target(b_next_obs, next_actions),
                                       critic2_target(b_next_obs, next_actions), next_log_prob, alpha, gamma)
            q1, q2 = critic1(b_obs, b_actions), critic2(b_obs, b_actions)
            critic_losses = (F.mse_loss(q1, target, reduction="none").mean(dim=-1)
                             + F.mse_loss(q2, target, reduction="none").mean(dim=-1))  # one per agent
            loop.check_finite(step, "losses/critic_loss", critic_losses)
            critic_optimizer.zero_grad()
            critic_losses.sum().backward()  # each agent's gradient is its own loss's
            critic_optimizer.step()

            new_actions, log_prob = actor.sample(b_obs, loop.normal((a.batch_size, action_dim)))
            actor_losses = (alpha * log_prob - torch.min(critic1(b_obs, new_actions), critic2(b_obs, new_actions))).mean(dim=-1)
            loop.check_finite(step, "losses/actor_loss", actor_losses)
            actor_optimizer.zero_grad()
            actor_losses.sum().backward()
            actor_optimizer.step()
            if a.autotune:
                alpha_losses = temperature_loss(temperature["log_alpha"], log_prob, target_entropy)
                alpha_optimizer.zero_grad()
                alpha_losses.sum().backward()
                alpha_optimizer.step()

            with torch.no_grad():
                for net, target_net in ((critic1, critic1_target), (critic2, critic2_target)):
                    for p, p_target in zip(net.net.parameters(), target_net.net.parameters()):
                        p_target.lerp_(p, a.tau)
            if step % 100 == 0:
                for agent, critic_loss, actor_loss, q, alpha_k, entropy in zip(
                        agents, critic_losses.tolist(), actor_losses.tolist(), q1.mean(dim=-1).tolist(),
                        alpha[:, 0].tolist(), (-log_prob.mean(dim=-1)).tolist()):
                    if agent.active:
                        agent.run.log_scalars(step, {"losses/critic_loss": critic_loss / 2, "losses/actor_loss": actor_loss,
                                                     "losses/q_values": q, "losses/alpha": alpha_k,
                                                     "charts/entropy": entropy})

        if loop.after_step(step, obs):
            break
    return loop.finish(step)
