"""PPO (Schulman et al. 2017) with a spiking (or ANN) policy and an ANN (or spiking) value network. One file.

As CleanRL's ppo.py (discrete) and ppo_continuous_action.py (continuous) run it: rollouts of
`num_steps` steps in each of `num_envs` environments, GAE(lambda), `update_epochs` passes over the
rollout in `num_minibatches` shuffled minibatches, the clipped surrogate with advantages normalized
per minibatch, a clipped value loss, linear learning-rate annealing, one Adam over policy and value
with the gradient norm clipped, Adam's eps 1e-5 (ppo.adam_eps). The policy's readout gives categorical logits
(discrete actions) or the mean of a Gaussian with a state-independent log-std (continuous actions,
clipped to the action box when stepping the environment); deterministic evaluation takes the argmax
or the clipped mean.

Where it differs from CleanRL, and why:
- observations are normalized by the policy's own running mean and variance (network.normalize_obs
  with obs_normalizer mean_std, Gymnasium's NormalizeObservation), so the statistics are saved with the
  policy, exported to NIR and used at evaluation; they are updated with every observation collected and
  frozen during the update, and the rollout stores the normalized observations the policy acted on;
- rewards are divided by the running standard deviation of each environment's discounted return and
  clipped (Stable-Baselines3's VecNormalize: one running variance per agent over its environments);
- the policy may have its own learning rate (policy_learning_rate): a step that flips spikes moves a
  spiking policy far more than the same step moves an ANN (PopSAN trains its spiking actor at a tenth of
  its critic's rate); optionally (desired_kl) that rate adapts, per agent, to hold the approximate KL
  between the rollout's policy and the updated one near desired_kl instead of being annealed (after
  rsl_rl's adaptive schedule, which adapts one rate for actor and critic from the analytic Gaussian KL);
  the Gaussian's log-std may have a rate of its own (log_std_learning_rate): it moves the policy smoothly,
  and at a spiking network's small rate it narrows too slowly;
- policy_target_kl stops, per agent, only the policy's part of an update once its KL passes the target
  (CleanRL's target_kl stops the value network too, which then falls behind when the policy stops early),
  checked after each epoch as CleanRL does, or (policy_kl_check minibatch) before each policy step on that
  minibatch's KL as Stable-Baselines3 does, so that a spiking policy, which may pass the target within its
  first epoch, stops near it;
  its logged losses are those of its last minibatch before the stop (the one whose KL stopped it, as
  CleanRL logs them); once every agent's policy has stopped (an agent that finished training or diverged
  counts as stopped: its network stays as it was), the policy's passes are skipped (unless an
  encoder draws random spikes, whose draws the passes would move on), its loss no longer checked;
  log_std_after_stop keeps the Gaussian's log-std training after the stop (the network's readout is then
  computed without its backward pass, the logged entropy is the latest minibatch's), since a stopped
  spiking policy otherwise keeps its starting width;
- policy_num_minibatches lets the policy step less often than the value network, on the mean of its
  gradients over several of the value network's minibatches (each clipped as it would be without the
  option, so the value network's steps keep the joint clip's rule, which ties them to the policy's
  gradient), since a spiking policy pays KL for every step, well aimed or not;
- clip_grad_per_network clips the policy's and the value network's gradients each on its own: a spiking
  policy's surrogate gradient, 10 to 17 times an ANN policy's in norm, otherwise shrinks the value
  network's steps with the joint clip while the policy trains (neither Spinning Up's PPO nor PopSAN's
  clips gradients; both step the two networks with separate optimizers); losses/policy_grad_norm (over
  the steps in which the policy trains) and losses/value_grad_norm log both norms before the clip;
- an episode cut by its time limit bootstraps, r + gamma V(last observation), as Stable-Baselines3
  does (the time limit is not in the observation); truncation_bootstraps false ends the return there,
  as CleanRL does.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from spikerl.config import ADAPTIVE_RATE_BOUNDS, NetworkConfig, TrainConfig
from spikerl.rl.envs import check_settings_fit
from spikerl.rl.loop import TrainingLoop, as_obs_tensor, clip_grad_norm_per_agent, grad_norm_per_agent
from spikerl.rl.run import CheckpointStore, Run
from spikerl.snn.encoders import ObservationNormalizer, RunningMeanStd, observation_normalizer
from spikerl.snn.network import build_network, output_layer

# Whether an update skips the policy's passes once every agent's policy has stopped (policy_target_kl). The
# reference path (False) computes and undoes them; tests check that both train and log the same.
SKIP_STOPPED_POLICY = True
POLICY_DIAGNOSTICS = ("policy_loss", "approx_kl", "clip_fraction", "entropy")


class Policy(nn.Module):
    """pi(a | s) from the network's readout on normalized observations: categorical logits, or a Gaussian
    mean with a state-independent log-std (`log_std`, one per action dimension)."""

    def __init__(self, cfg: TrainConfig, obs_norm: ObservationNormalizer, action_space: gym.Space,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu"):
        super().__init__()
        self.obs_norm = obs_norm
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        outputs = int(action_space.n) if self.discrete else action_space.shape[0]
        self.net = build_network(cfg.network, obs_norm.dim, outputs, generator, device)
        with torch.no_grad():
            output_layer(self.net).weight.mul_(cfg.ppo.policy_output_scale)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((outputs,), cfg.ppo.initial_log_std, device=device))
            self.register_buffer("action_low", torch.as_tensor(action_space.low, dtype=torch.float32, device=device))
            self.register_buffer("action_high", torch.as_tensor(action_space.high, dtype=torch.float32, device=device))

    def log_prob_and_entropy(self, readout: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a | s) and the entropy of pi(. | s) for the network's `readout` [..., outputs]: [...] each."""
        if self.discrete:
            log_p = torch.log_softmax(readout, dim=-1)
            return log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1), -(log_p.exp() * log_p).sum(dim=-1)
        log_std = self.log_std.expand_as(readout)
        log_prob = (-0.5 * ((actions - readout) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(dim=-1)
        return log_prob, (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(dim=-1)

    def sample(self, readout: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """An action drawn from pi(. | s) with the caller's noise (from the agent's generator): uniform [...]
        for categorical (inverse CDF), standard normal [..., dims] for Gaussian (mean + std * noise)."""
        if self.discrete:
            cdf = torch.softmax(readout, dim=-1).cumsum(dim=-1)
            return (cdf < noise.unsqueeze(-1)).sum(dim=-1).clamp(max=readout.shape[-1] - 1)
        return readout + self.log_std.exp() * noise

    def deterministic(self, readout: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return readout.argmax(dim=-1)
        return torch.max(torch.min(readout, self.action_high), self.action_low)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The action evaluation takes: the most likely one, or the mean clipped to the action box."""
        return self.deterministic(self.net(self.obs_norm(obs)))

    @torch.no_grad()
    def act(self, obs: np.ndarray):
        action = self(as_obs_tensor(obs, self.obs_norm.device))[0]
        return int(action.item()) if self.discrete else action.cpu().numpy()

    @torch.no_grad()
    def act_agents(self, obs: torch.Tensor) -> np.ndarray:
        """Stacked: each agent's action for its observation, obs [K, 1, d] -> [K, ...]."""
        return self(obs)[:, 0].cpu().numpy()


class Value(nn.Module):
    """V(s) on normalized observations."""

    def __init__(self, net_cfg: NetworkConfig, obs_dim: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.net = build_network(net_cfg, obs_dim, 1, generator, device)

    def forward(self, normalized_obs: torch.Tensor) -> torch.Tensor:
        return self.net(normalized_obs).squeeze(-1)


class RewardScaler(nn.Module):
    """Rewards divided by the running standard deviation of the discounted return, then clipped: each
    environment's return G = gamma G + r (reset where an episode ended), one running variance per agent
    over its environments' returns. Buffers: `returns` [K, N] and the statistics [K, 1, 1]."""

    def __init__(self, agents: int, envs: int, clip: float, enabled: bool = True):
        super().__init__()
        self.clip, self.enabled = clip, enabled
        self.register_buffer("returns", torch.zeros(agents, envs, dtype=torch.float64))
        self.statistics = RunningMeanStd(1).stacked(agents)

    @torch.no_grad()
    def forward(self, rewards: torch.Tensor, ended: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        """rewards, ended [K, N] -> scaled rewards [K, N] (float32)."""
        if not self.enabled:
            return rewards
        self.returns.mul_(gamma).add_(rewards)
        self.statistics.update(self.returns.unsqueeze(-1))
        scaled = rewards / torch.sqrt(self.statistics.var[:, :, 0] + 1e-8)
        self.returns.mul_(1.0 - ended)
        return scaled.clamp(-self.clip, self.clip).to(torch.float32)


class AdaptiveRate(nn.Module):
    """Each agent's policy learning rate under the adaptive KL schedule (after rsl_rl's): before a minibatch step,
    rate / 1.5 if KL > 2 desired_kl, rate x 1.5 if 0 < KL < desired_kl / 2, kept in ADAPTIVE_RATE_BOUNDS; KL is the
    approximate KL from the rollout's policy to the current one. Buffer `rate` [K] (checkpointed)."""

    (LOWEST, HIGHEST), FACTOR = ADAPTIVE_RATE_BOUNDS, 1.5

    def __init__(self, agents: int, initial: float, desired_kl: float):
        super().__init__()
        self.desired_kl = desired_kl
        self.register_buffer("rate", torch.full((agents,), initial, dtype=torch.float64))

    @torch.no_grad()
    def adapt(self, approx_kl: torch.Tensor) -> None:
        kl = approx_kl.to(self.rate.dtype)
        lower, higher = (self.rate / self.FACTOR).clamp(min=self.LOWEST), (self.rate * self.FACTOR).clamp(max=self.HIGHEST)
        self.rate.copy_(torch.where(kl > 2 * self.desired_kl, lower,
                                    torch.where((kl > 0) & (kl < self.desired_kl / 2), higher, self.rate)))

    @torch.no_grad()
    def scale_steps(self, parameters: list[torch.Tensor], before: list[torch.Tensor]) -> None:
        """`parameters` [K, ...] just took Adam's unit step from `before`: each agent's step times its rate."""
        for parameter, start in zip(parameters, before):
            rate = self.rate.to(parameter.dtype).view(-1, *[1] * (parameter.dim() - 1))
            parameter.copy_(start + rate * (parameter - start))


def zero_agent_gradients(agents: torch.Tensor, parameters: list[torch.Tensor]) -> None:
    """The given agents' ([K] mask) slices of the gradients of `parameters` [K, ...] set to zero."""
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad[agents] = 0.0


class AgentSnapshot:
    """The given agents' slices of `parameters` [K, ...] and of their Adam moments, put back by `restore()`
    after an optimizer step, so that for those agents the step did not happen. Adam's step count is one per
    parameter tensor, shared by the agents, and it advances; the restored moments are rescaled so that their
    bias-corrected values, m / (1 - beta1^t) and v / (1 - beta2^t), which Adam's steps use, stay as they were."""

    def __init__(self, agents: torch.Tensor, parameters: list[torch.Tensor], optimizer: torch.optim.Optimizer):
        self.index = agents.nonzero().squeeze(-1)
        betas = {id(q): group["betas"] for group in optimizer.param_groups for q in group["params"]}
        self.saved = []
        for parameter in parameters:
            state = optimizer.state.get(parameter, {})
            entry = [(parameter.data, parameter.data[self.index], 1.0)]  # indexing by a tensor copies
            if "step" in state:
                steps = float(state["step"])
                for key, beta in zip(("exp_avg", "exp_avg_sq"), betas[id(parameter)]):
                    entry.append((state[key], state[key][self.index], (1 - beta ** (steps + 1)) / (1 - beta ** steps)))
            self.saved.append(entry)

    def restore(self) -> None:
        for entry in self.saved:
            for tensor, values, rescale in entry:
                tensor[self.index] = values * rescale


def make_policy(cfg: TrainConfig, env: gym.Env, device: torch.device | str = "cpu") -> Policy:
    obs_norm = observation_normalizer(cfg.network, env.observation_space.shape[0]).to(device)
    return Policy(cfg, obs_norm, env.action_space, device=device)


def generalized_advantages(rewards: torch.Tensor, values: torch.Tensor, ended: torch.Tensor, next_value: torch.Tensor,
                           gamma: float | torch.Tensor, lam: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over a rollout: rewards, values, ended [K, S, N] (ended[:, t]: the episode ended at step t, so
    step t + 1 begins another), next_value [K, N] (the observation after the rollout); gamma and lam numbers
    or per agent [K, 1].
    delta_t = r_t + gamma V_{t+1} (1 - ended_t) - V_t, A_t = delta_t + gamma lambda (1 - ended_t) A_{t+1};
    returns (advantages, advantages + values)."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        following = next_value if t == rewards.shape[1] - 1 else values[:, t + 1]
        continues = 1.0 - ended[:, t]
        delta = rewards[:, t] + gamma * following * continues - values[:, t]
        last = delta + gamma * lam * continues * last
        advantages[:, t] = last
    return advantages, advantages + values


def clipped_losses(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                   new_value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip: float,
                   clip_value_loss: bool, normalize_advantages: bool) -> dict[str, torch.Tensor]:
    """PPO's losses on a minibatch per agent (every input [K, M]; every output [K]):
    policy_loss = mean(max(-A r, -A clip(r, 1 - c, 1 + c))), r = pi_new(a | s) / pi_old(a | s), A normalized
    over the minibatch when asked; value_loss = 0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2))
    (or 0.5 mean((V - R)^2)); and the diagnostics approx_kl = mean((r - 1) - log r), clip_fraction."""
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    if normalize_advantages:
        advantages = (advantages - advantages.mean(dim=-1, keepdim=True)) / (advantages.std(dim=-1, keepdim=True) + 1e-8)
    policy_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)).mean(dim=-1)
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean(dim=-1)
        clip_fraction = ((ratio - 1.0).abs() > clip).float().mean(dim=-1)
    return {"policy_loss": policy_loss, "value_loss": value_loss(new_value, old_value, returns, clip, clip_value_loss),
            "approx_kl": approx_kl, "clip_fraction": clip_fraction}


def value_loss(new_value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip: float,
               clip_value_loss: bool) -> torch.Tensor:
    """PPO's value loss per agent ([K, M] inputs, [K] output), as clipped_losses gives it."""
    unclipped = (new_value - returns) ** 2
    if not clip_value_loss:
        return 0.5 * unclipped.mean(dim=-1)
    clipped = (old_value + (new_value - old_value).clamp(-clip, clip) - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean(dim=-1)


def upgrade_optimizer_state(state: dict, policy_parameters: int) -> None:
    """Checkpoints written before the policy had its own learning rate hold one Adam parameter group over
    policy and value, in that order: split it in place into the policy's group and the value's."""
    if len(state.get("param_groups", ())) == 1:
        group = state["param_groups"][0]
        state["param_groups"] = [{**group, "params": group["params"][:policy_parameters]},
                                 {**group, "params": group["params"][policy_parameters:]}]


def train(cfgs: list[TrainConfig], runs: list[Run | None], store: CheckpointStore,
          checkpoint: dict | None = None) -> list[dict | None]:
    """Train agents `cfgs` (a population; one config is an ordinary run) from scratch or from `checkpoint`."""
    p = cfgs[0].ppo  # what agents share; per agent: gamma and lambda
    # Seeding: each agent's networks, environments, generators from its own seed (the loop); action noise
    # from the agent's torch generator, minibatch order from its run generator.
    loop = TrainingLoop(cfgs, runs, store, envs_per_agent=p.num_envs)
    check_settings_fit(loop.cfg, loop.action_space)
    device, agents = loop.device, loop.agents
    K, N, S = loop.size, p.num_envs, p.num_steps
    rollout, iterations = N * S, loop.cfg.total_steps // (N * S)
    minibatch = rollout // p.num_minibatches
    accumulated = p.num_minibatches // p.policy_minibatch_count()  # value minibatches per policy step

    policy, value = loop.build(lambda agent, norm: (
        Policy(agent.cfg, norm, loop.action_space, agent.membrane_generator, device),
        Value(p.critic, norm.dim, agent.membrane_generator, device)))
    log_std = [] if p.log_std_learning_rate is None else [policy.log_std]  # its own Adam group, or the policy's
    policy_parameters = [q for q in policy.parameters() if not any(q is s for s in log_std)]
    parameters = [*policy_parameters, *value.parameters(), *log_std]
    policy_side, value_side = [*policy_parameters, *log_std], list(value.parameters())
    # Adam's groups by index: 0 the policy, 1 the value, 2 the log-std when it has its own rate
    learning_rates = (p.starting_policy_learning_rate(), p.learning_rate, p.log_std_learning_rate)
    policy_rate = None if p.desired_kl is None else AdaptiveRate(K, learning_rates[0], p.desired_kl).to(device)
    # Adaptive: Adam takes unit steps on the policy, and each agent's step is scaled by its own rate.
    groups = [{"params": policy_parameters, "lr": learning_rates[0] if policy_rate is None else 1.0,
               "eps": p.adam_eps if p.policy_adam_eps is None else p.policy_adam_eps},
              {"params": list(value.parameters()), "lr": learning_rates[1]}]
    if log_std:
        groups.append({"params": log_std, "lr": learning_rates[2]})
    optimizer = torch.optim.Adam(groups, eps=p.adam_eps)
    annealed_groups = ([0] if policy_rate is None else []) + [1] + ([2] if log_std else [])
    reward_scaler = RewardScaler(K, N, p.reward_clip, p.normalize_rewards).to(device)
    gamma, lam = loop.per_agent(lambda cfg: cfg.ppo.gamma), loop.per_agent(lambda cfg: cfg.ppo.gae_lambda)  # [K, 1]
    returns_gamma = loop.per_agent(lambda cfg: cfg.ppo.gamma, torch.float64)  # the scaler's returns are float64
    action_shape = () if policy.discrete else loop.action_space.shape
    low, high = (None, None) if policy.discrete else (loop.action_space.low, loop.action_space.high)
    loop.backends = {"actor": policy.net.backend, "value": value.net.backend}
    # A stopped policy's passes may be skipped unless they draw random input spikes (skipping would move later draws)
    may_skip_policy = SKIP_STOPPED_POLICY and not any(net.draws_random_spikes for net in (loop.cfg.network, p.critic))
    check_every_minibatch = p.policy_target_kl is not None and p.policy_kl_check == "minibatch"
    # What a stopped policy keeps as it is: all of it, or all but its log-std (log_std_after_stop)
    frozen_when_stopped = [q for q in policy.parameters()
                           if not (p.log_std_after_stop and q is getattr(policy, "log_std", None))]

    if checkpoint is not None and "optimizer" in checkpoint.get("components", {}):
        upgrade_optimizer_state(checkpoint["components"]["optimizer"], len(policy_parameters))
    components = {"actor": policy, "value": value, "optimizer": optimizer, "reward_scaler": reward_scaler}
    if policy_rate is not None:
        components["policy_rate"] = policy_rate
    step, obs = loop.begin(checkpoint, policy=policy, buffer=None, components=components)
    rollout_obs = torch.zeros(K, S, N, loop.observation_space.shape[0], device=device)
    actions = torch.zeros(K, S, N, *action_shape, dtype=torch.int64 if policy.discrete else torch.float32, device=device)
    log_probs, rewards, ended, values = (torch.zeros(K, S, N, device=device) for _ in range(4))
    rows = torch.arange(K, device=device).unsqueeze(-1)
    for iteration in range(step // rollout + 1, iterations + 1):
        if not loop.active_agents():
            break
        if p.anneal_lr:
            for group in annealed_groups:  # by index: restoring a checkpoint replaces the group dicts
                optimizer.param_groups[group]["lr"] = learning_rates[group] * (1.0 - (iteration - 1) / iterations)
        for t in range(S):
            with torch.no_grad():
                x = policy.obs_norm(loop.obs_tensor(obs))  # [K, N, d], the statistics as they are now
                readout = policy.net(x)
                noise = loop.uniform((N,)) if policy.discrete else loop.normal((N, *action_shape))
                action = policy.sample(readout, noise)
                rollout_obs[:, t], actions[:, t], values[:, t] = x, action, value(x)
                log_probs[:, t] = policy.log_prob_and_entropy(readout, action)[0]
            env_actions = action.cpu().numpy() if policy.discrete else np.clip(action.cpu().numpy(), low, high)
            obs, reward, episode_ended, truncated, reached = loop.vector_step(step + N, obs, env_actions)
            step += N
            ended[:, t] = torch.as_tensor(episode_ended, device=device)
            rewards[:, t] = reward_scaler(torch.as_tensor(reward, device=device, dtype=torch.float64), ended[:, t],
                                          returns_gamma)
            if loop.cfg.truncation_bootstraps and truncated.any():  # the return goes on past the time limit
                with torch.no_grad():
                    cut = torch.as_tensor(truncated, device=device)
                    rewards[:, t] += gamma * cut * value(policy.obs_norm(loop.obs_tensor(reached)))
            if loop.after_step(step, obs, stride=N, boundary=False, evaluate=False):
                break
        if not loop.active_agents():  # every agent stopped inside the rollout: no update
            break

        with torch.no_grad():
            next_value = value(policy.obs_norm(loop.obs_tensor(obs)))
            advantages, returns = generalized_advantages(rewards, values, ended, next_value, gamma, lam)
        flat = [t.reshape(K, rollout, *t.shape[3:]) for t in (rollout_obs, actions, log_probs, advantages, returns, values)]
        policy_moving = torch.ones(K, dtype=torch.bool, device=device)  # per agent, in this update
        policy_steps = torch.zeros(K, device=device)  # per agent, the minibatches on which its policy was moving
        grad_norms = torch.zeros(2, K, device=device)  # before the clip, summed: the policy's while it moves, the value's
        logged = {}  # each agent's policy diagnostics from its last minibatch while it moved, or the one whose KL
        # stopped it (log_std_after_stop: the entropy from its latest)
        for epoch in range(p.update_epochs):
            # A finished agent's policy (or one that diverged in an earlier epoch) is frozen like a stopped one, so
            # that it does not hold the others' update to the policy's full passes.
            policy_moving &= torch.tensor([agent.active for agent in agents], device=device)
            if p.policy_target_kl is not None and epoch > 0 and not check_every_minibatch:
                policy_moving &= logged["approx_kl"] <= p.policy_target_kl  # CleanRL's check: an epoch's last minibatch
            some_stopped = not policy_moving.all()  # fixed for the epoch unless checked at every minibatch
            # Every policy stopped: its forward and backward passes would be undone, so only the value's run (a
            # spiking policy's passes are most of an update's time); its gradient is zero, as undone ones are. With
            # log_std_after_stop the forward pass runs too, without a backward pass, for the log-std's gradient.
            # (policy_target_kl excludes desired_kl, whose adaptive rate would need each minibatch's KL.)
            skip_policy = may_skip_policy and not policy_moving.any()
            order = torch.as_tensor(np.stack([agent.rng.permutation(rollout) for agent in agents]), device=device)
            policy_sum: list[torch.Tensor | None] = [None] * len(policy_side)  # the clipped gradients since its last step
            for start in range(0, rollout, minibatch):
                index = order[:, start:start + minibatch]
                policy_turn = (start // minibatch + 1) % accumulated == 0  # the policy steps (policy_num_minibatches)
                b_obs, b_actions, b_log_probs, b_advantages, b_returns, b_values = (t[rows, index] for t in flat)
                if check_every_minibatch:  # an agent may have stopped at the last minibatch
                    skip_policy = may_skip_policy and not policy_moving.any()
                if skip_policy and not p.log_std_after_stop:
                    losses = {"value_loss": value_loss(value(b_obs), b_values, b_returns, p.clip_coef, p.clip_value_loss)}
                    loss = p.value_coef * losses["value_loss"]
                else:
                    with torch.set_grad_enabled(not skip_policy):  # a stopped network: no backward pass to take
                        readout = policy.net(b_obs)
                    new_log_prob, entropy = policy.log_prob_and_entropy(readout, b_actions)
                    losses = clipped_losses(new_log_prob, b_log_probs, b_advantages, value(b_obs), b_values, b_returns,
                                            p.clip_coef, p.clip_value_loss, p.normalize_advantages)
                    losses["entropy"] = entropy.mean(dim=-1)
                    loss = losses["policy_loss"] - p.entropy_coef * losses["entropy"] + p.value_coef * losses["value_loss"]
                    for name in POLICY_DIAGNOSTICS:  # a log-std that trains on changes the entropy: its latest
                        new, moving = losses[name].detach(), policy_moving | (p.log_std_after_stop and name == "entropy")
                        logged[name] = torch.where(moving, new, logged[name]) if name in logged else new
                    if check_every_minibatch and not skip_policy and (epoch, start) != (0, 0):
                        # SB3's check: this minibatch's KL, before its step (the update's first step is always taken)
                        policy_moving &= losses["approx_kl"] <= p.policy_target_kl
                        some_stopped = not policy_moving.all()
                policy_steps += policy_moving
                loop.check_finite(step, "losses/loss", loss)
                optimizer.zero_grad()
                loss.sum().backward()  # each agent's gradient is its own loss's
                if skip_policy:  # the zero gradients the reference path's undone steps see
                    for q in frozen_when_stopped:
                        if q in optimizer.state:
                            q.grad = torch.zeros_like(q)
                if some_stopped:  # before clipping: a stopped policy's gradient is no part of the norm
                    zero_agent_gradients(~policy_moving, frozen_when_stopped)
                # only a policy step needs undoing for the stopped agents (policy_num_minibatches: on its turns)
                stopped = (AgentSnapshot(~policy_moving, frozen_when_stopped, optimizer)
                           if some_stopped and policy_turn else None)
                policy_norm = None if skip_policy else grad_norm_per_agent(policy_side)
                value_norm = grad_norm_per_agent(value_side)
                if policy_norm is not None:
                    grad_norms[0] += policy_norm * policy_moving
                grad_norms[1] += value_norm
                if p.clip_grad_per_network:  # the norms before the clip, computed once (skip_policy: the clip's own)
                    clip_grad_norm_per_agent(policy_side, p.max_grad_norm, policy_norm)
                    clip_grad_norm_per_agent(value_side, p.max_grad_norm, value_norm)
                else:
                    clip_grad_norm_per_agent(parameters, p.max_grad_norm)
                if accumulated > 1:  # sum the policy's gradients; at its turn it steps on their mean, until then
                    for i, q in enumerate(policy_side):  # they are unset, and Adam leaves it, its moments and its
                        if q.grad is not None:  # step count as they are
                            policy_sum[i] = q.grad if policy_sum[i] is None else policy_sum[i] + q.grad
                        q.grad = policy_sum[i] / accumulated if policy_turn and policy_sum[i] is not None else None
                    if policy_turn:
                        policy_sum = [None] * len(policy_side)
                if policy_rate is None:
                    optimizer.step()
                else:
                    policy_rate.adapt(losses["approx_kl"])
                    before = [q.detach().clone() for q in policy_parameters]
                    optimizer.step()
                    policy_rate.scale_steps(policy_parameters, before)
                if stopped is not None:
                    stopped.restore()

        explained = 1.0 - (returns - values).reshape(K, -1).var(dim=-1) / returns.reshape(K, -1).var(dim=-1).clamp(min=1e-8)
        for agent in loop.active_agents():
            k = agent.index
            agent.run.log_scalars(step, {
                "charts/learning_rate": optimizer.param_groups[1]["lr"], "charts/policy_learning_rate":
                    optimizer.param_groups[0]["lr"] if policy_rate is None else policy_rate.rate[k].item(),
                **({"charts/log_std_learning_rate": optimizer.param_groups[2]["lr"]} if log_std else {}),
                **({"charts/policy_epochs": policy_steps[k].item() / p.num_minibatches}
                   if p.policy_target_kl is not None else {}),
                "losses/policy_loss": logged["policy_loss"][k].item(),
                "losses/value_loss": losses["value_loss"][k].item(), "losses/entropy": logged["entropy"][k].item(),
                "losses/approx_kl": logged["approx_kl"][k].item(), "losses/clipfrac": logged["clip_fraction"][k].item(),
                "losses/policy_grad_norm": grad_norms[0, k].item() / policy_steps[k].item(),
                "losses/value_grad_norm": grad_norms[1, k].item() / (p.update_epochs * p.num_minibatches),
                "losses/explained_variance": explained[k].item()})
        loop.after_update(step, obs, stride=rollout, final=iteration == iterations)
    return loop.finish(step)
