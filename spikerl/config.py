"""Typed run configuration: dataclasses, loaded from YAML, overridden by `key=value`, validated.

A config file is a YAML mapping whose keys mirror the dataclasses below, for example::

    algo: dqn
    env_id: CartPole-v1
    network:
      kind: snn
      hidden: [64, 64]
      timesteps: 3
      neuron: {alpha: [0.0, 0.5], beta: 0.5, theta: 0.2}

Overrides use dotted paths: ``network.neuron.theta=0.5``, ``dqn.double=true``.
Every value is checked here, so a bad one is reported as one line before any work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from spikerl.errors import ConfigError
from spikerl.fileio import atomic_write_text

PerLayer = Union[float, list[float]]  # one value for every hidden layer, or one per hidden layer
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


@dataclass
class NeuronConfig:
    """CUBA-LIF hidden neurons. alpha/beta are retentions in [0, 1] (1 = no decay); theta > 0."""

    alpha: PerLayer = 0.5  # current decay (retention)
    beta: PerLayer = 0.5  # voltage decay (retention)
    theta: PerLayer = 1.0  # firing threshold
    reset: Literal["hard", "subtract"] = "hard"
    detach_reset: bool = True  # no gradient through the reset, as in SpyTorch/dsrl and snnTorch
    surrogate: Literal["fast_sigmoid", "atan", "rectangular"] = "fast_sigmoid"
    surrogate_slope: float | None = None  # fast_sigmoid: 100 (paper); atan: 2
    surrogate_width: float = 1.0  # rectangular window width (PopSAN: 1.0)
    randomize: Literal["none", "normal", "uniform"] = "none"  # per-neuron draw of alpha, beta, theta
    spread: float = 0.1  # normal: std = spread * value; uniform: value * [1 - spread, 1 + spread]
    learnable: bool = False  # per-neuron alpha, beta, theta trained by gradient (kept in range)


@dataclass
class NetworkConfig:
    """A spiking MLP (kind snn) or its ANN twin of the same sizes (kind ann)."""

    kind: Literal["snn", "ann"] = "snn"
    # How spiking layers compute their T steps (spikerl.snn.backends), with and without gradients: auto (native
    # on a CPU that can build it, else fused; fused on CUDA), reference (the plain loop), fused (one autograd
    # node per layer), native (C++ operators, CPU), compiled (the fused loops through torch.compile).
    backend: Literal["auto", "reference", "fused", "native", "compiled"] = "auto"
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    timesteps: int = 5  # T: integration steps per forward pass
    encoder: Literal["two_neuron", "direct", "population", "poisson"] = "two_neuron"
    normalize_obs: bool = False  # normalize observations with running statistics (obs_normalizer)
    # max_abs: o / max|o| per component (dsrl's TD3); mean_std: clip((o - mean) / std, -obs_clip, obs_clip)
    # (standard PPO)
    obs_normalizer: Literal["max_abs", "mean_std"] = "max_abs"
    # mean_std's clip: Gymnasium's NormalizeObservation and Stable-Baselines3's VecNormalize clip at 10; PopSAN's
    # TD3 at 3, where its population encoder's initial means end
    obs_clip: float = 10.0
    activation: Literal["relu", "tanh"] = "relu"  # the ANN's hidden units (spiking networks spike)
    population_size: int = 10  # population encoder and population decoder: neurons per dimension
    population_range: list[float] = field(default_factory=lambda: [-3.0, 3.0])  # initial means span
    population_std: float = math.sqrt(0.15)  # initial receptive-field std: PopSAN's (its fields' variance 0.15)
    population_spikes: Literal["deterministic", "poisson"] = "deterministic"
    decoder: Literal["membrane", "integrator", "population"] = "membrane"
    readout_alpha: float | None = None  # membrane decoder; None: the last hidden layer's alpha
    readout_beta: float | None = None  # membrane decoder; None: the last hidden layer's beta
    bias: bool = False  # dsrl's SNNs have no biases; the ANN twin always has them
    neuron: NeuronConfig = field(default_factory=NeuronConfig)

    @property
    def draws_random_spikes(self) -> bool:
        """Whether its input spikes are random (encoder poisson, or population with population_spikes poisson):
        drawn from torch's global generator, so every forward pass moves that generator on."""
        return self.kind == "snn" and (self.encoder == "poisson" or
                                       (self.encoder == "population" and self.population_spikes == "poisson"))


@dataclass
class EvalConfig:
    every: int = 5000  # environment steps between evaluations (0: only at the end)
    episodes: int = 10  # periodic evaluations
    final_episodes: int = 20  # the final evaluation
    seed: int = 10_000  # evaluation episode i uses seed + i (fixed across runs)
    stop_at_return: float | None = None  # stop training once a periodic evaluation reaches this


@dataclass
class VideoConfig:
    """Evaluation videos while training: RUN/videos/step_N.mp4 and TensorBoard's eval/video."""

    every: int = 0  # environment steps between videos (0: none)
    episodes: int = 1  # deterministic episodes per video, seeded as the evaluations
    raster: bool = False  # the hidden spikes beside each frame (spiking policies)
    fps: float | None = None  # playback rate; None: the environment's own


@dataclass
class DQNConfig:
    buffer_size: int = 40_000
    batch_size: int = 128
    gamma: float = 0.999
    learning_rate: float = 1e-3
    anneal_lr: bool = False  # decay the learning rate linearly to 0 at total_steps
    learning_starts: int = 1000
    train_every: int = 4  # environment steps between training phases
    gradient_steps: int = 1  # updates per training phase
    double: bool = False
    target_update: Literal["hard", "soft"] = "hard"
    target_update_every: int = 100  # hard updates: steps between copies
    tau: float = 0.005  # soft updates: Polyak coefficient
    epsilon_schedule: Literal["exponential", "linear"] = "exponential"
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay: float = 0.999  # exponential: factor per step
    epsilon_decay_steps: int = 10_000  # linear: steps from start to end
    loss: Literal["huber", "mse"] = "huber"
    max_grad_norm: float | None = None


def _ann_critic() -> NetworkConfig:
    return NetworkConfig(kind="ann", hidden=[400, 300], encoder="direct")


@dataclass
class TD3Config:
    buffer_size: int = 1_000_000
    batch_size: int = 100
    gamma: float = 0.99
    tau: float = 0.005
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3
    learning_starts: int = 1000  # uniform random actions before this step
    exploration_noise: float = 0.1  # std, as a fraction of the action bound, per dimension
    policy_delay: int = 2
    target_noise: float = 0.2
    target_noise_clip: float = 0.5
    critic: NetworkConfig = field(default_factory=_ann_critic)


def _sac_critic() -> NetworkConfig:
    return NetworkConfig(kind="ann", hidden=[256, 256], encoder="direct")


@dataclass
class SACConfig:
    """SAC (Haarnoja et al. 2018, with automatic entropy tuning): the spiking actor's readout gives the mean
    and log-std of a tanh-squashed Gaussian; twin critics with Polyak-averaged targets."""

    buffer_size: int = 1_000_000
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 1e-3
    learning_starts: int = 5000  # uniform random actions before this step
    alpha: float = 0.2  # entropy temperature: the start value with autotune, else fixed
    autotune: bool = True  # tune alpha toward target_entropy
    alpha_learning_rate: float | None = None  # None: the critic's
    target_entropy: float | None = None  # None: -(action dimensions)
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    critic: NetworkConfig = field(default_factory=_sac_critic)


def _ppo_critic() -> NetworkConfig:
    return NetworkConfig(kind="ann", hidden=[64, 64], encoder="direct", activation="tanh")


ADAPTIVE_RATE_BOUNDS = (1e-5, 1e-2)  # where ppo.desired_kl's adaptive policy learning rate stays (rsl_rl's)


@dataclass
class PPOConfig:
    """PPO (Schulman et al. 2017) as the standard implementations run it (CleanRL's ppo and
    ppo_continuous_action): clipped surrogate, GAE, per-minibatch advantage normalization, clipped value
    loss, linear learning-rate annealing, gradient clipping, reward scaling by the running standard
    deviation of the discounted return. The defaults are the MuJoCo settings."""

    num_envs: int = 1  # environments per agent, stepped together
    num_steps: int = 2048  # steps per environment in each rollout; a rollout is num_envs * num_steps
    num_minibatches: int = 32
    # The policy's steps per epoch (None: num_minibatches). Fewer: the policy steps on the mean of its gradients
    # over num_minibatches / policy_num_minibatches consecutive minibatches (each clipped as without this
    # option), a less noisy step, while the value network steps on every minibatch. A spiking policy's
    # step costs KL in proportion to its size whether or not it raises the return, so noise in its direction is
    # costly.
    policy_num_minibatches: int | None = None
    update_epochs: int = 10
    learning_rate: float = 3e-4
    # The policy's own learning rate (None: learning_rate). A spiking policy's output moves in jumps when a
    # step flips spikes, so the same Adam step changes it far more than an ANN's (several times the KL).
    policy_learning_rate: float | None = None
    anneal_lr: bool = True  # decay the learning rates linearly to 0 over the run's updates
    # Adam's epsilon, in every group (CleanRL's 1e-5). Adam divides each weight's step by the root of its mean
    # squared gradient plus this, so a weight whose gradients are far below it takes steps far below the
    # learning rate. On Walker2d the spiking policy's surrogate gradients in its first hidden layer were about
    # 1e-6 (the ANN twin's 1e-3), so at 1e-5 that layer moved at about a tenth of the rate; PyTorch's default
    # is 1e-8 (benchmarks/adam_moments.py reads the gradient scales from a checkpoint).
    adam_eps: float = 1e-5
    # The policy's own Adam epsilon (None: adam_eps), for its Adam group: its network, and its log-std unless
    # that has its own rate (log_std_learning_rate); the value network keeps adam_eps. Above a spiking
    # policy's hidden layers' gradient scales it damps their steps, whose spike flips cost KL, and leaves its
    # readout's (gradients about 1e-2) at the learning rate.
    policy_adam_eps: float | None = None
    # Set: the policy's learning rate adapts instead (rsl_rl's adaptive schedule), per agent, before every
    # minibatch step: / 1.5 while the approximate KL to the rollout's policy exceeds 2 x desired_kl, x 1.5
    # while it is below desired_kl / 2, within ADAPTIVE_RATE_BOUNDS, starting from policy_learning_rate. A
    # log-std with its own rate (below) keeps that rate, annealed, though its steps count in the KL.
    desired_kl: float | None = None
    # Continuous actions: the state-independent log-std's own learning rate (None: the policy's). A step of
    # the log-std changes the policy smoothly, so it can learn at a rate the spiking network's weights cannot.
    log_std_learning_rate: float | None = None
    # Set: per agent, once the approximate KL between the rollout's policy and the updated one, where
    # policy_kl_check says, exceeds this, the policy stops for the rest of the update (its weights, log-std and Adam
    # moments stay as they are) while the value network trains every epoch, its gradient clipped alone. CleanRL's
    # target_kl stops both; a spiking policy reaches the target within an epoch or two, and its value network
    # needs the rest.
    policy_target_kl: float | None = None
    # Where policy_target_kl is checked. "epoch" (CleanRL's): after each epoch, on its last minibatch, so the
    # policy stops only between epochs and may pass the target by an epoch's steps. "minibatch" (Stable-Baselines3's,
    # without its factor 1.5 on the target): before each policy step, on that minibatch's KL, so the policy stops
    # before the step that would take it further past the target (the update's first step is never checked; with
    # randomly drawn input spikes the KL also holds the draws' noise).
    policy_kl_check: Literal["epoch", "minibatch"] = "epoch"
    # With policy_target_kl and continuous actions: the log-std keeps training on the minibatches after the
    # policy's network has stopped, and with policy_kl_check minibatch on the one that stopped it (its gradient
    # clipped with the value's; only the clipped objective bounds its steps,
    # and the logged KL stays the one that stopped the network). A step of the log-std moves the policy
    # smoothly; stopped with the network after an epoch or two, a spiking policy's Gaussian stays near its
    # starting width all run, where an ANN's narrows.
    log_std_after_stop: bool = False
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_value_loss: bool = True
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    # Set: the policy (with its log-std) and the value network each have their gradient clipped to max_grad_norm
    # on its own; unset, their joint norm is (CleanRL: one loss, one optimizer). A spiking policy's surrogate
    # gradient is 10 to 17 times an ANN policy's in norm, so a joint clip shrinks the value network's steps to
    # a few percent while the policy trains (Adam cannot undo a scale that changes within every update), and
    # only the epochs after a policy_target_kl stop train the value network in full. (On the MuJoCo presets
    # the value network then fits better, and the returns fall: docs/ppo_mujoco.md.)
    clip_grad_per_network: bool = False
    normalize_advantages: bool = True
    normalize_rewards: bool = True  # divide rewards by the running std of the discounted return, then clip
    reward_clip: float = 10.0
    initial_log_std: float = 0.0  # continuous actions: the state-independent log-std starts here
    # The policy's output layer starts with its weights times this (CleanRL: std 0.01), so that the first
    # policies are near uniform / zero-mean; for a spiking policy it also keeps a flipped spike from moving
    # the output far, which would otherwise put each update far outside the clipped trust region.
    policy_output_scale: float = 0.01
    critic: NetworkConfig = field(default_factory=_ppo_critic)

    def starting_policy_learning_rate(self) -> float:
        """The policy's learning rate at the first update: its own, or learning_rate when unset."""
        return self.learning_rate if self.policy_learning_rate is None else self.policy_learning_rate

    def policy_minibatch_count(self) -> int:
        """The policy's minibatches per epoch: its own count, or num_minibatches when unset."""
        return self.num_minibatches if self.policy_num_minibatches is None else self.policy_num_minibatches


@dataclass
class TrainConfig:
    algo: Literal["dqn", "td3", "sac", "ppo"] = "dqn"
    env_id: str = "CartPole-v1"
    # Keyword arguments of the environment's constructor (gym.make(env_id, **env_kwargs)), for example
    # {include_cfrc_ext_in_observation: false} for Ant-v5; used wherever the run's environment is made
    # (training, evaluation, videos, energy, NIR graphs).
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    total_steps: int = 100_000
    total_episodes: int | None = None  # also stop after this many training episodes (total_steps stays a cap)
    # A transition cut by the environment's time limit bootstraps from the next state (the time limit is not
    # in the observation); false treats it as terminal, as the paper's released code does.
    truncation_bootstraps: bool = True
    device: str = "cpu"  # auto (CUDA where available), cpu, cuda or cuda:N
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    run_dir: str | None = None  # None: runs/<env>-<algo>-<kind>-s<seed>-<time>
    checkpoint_every: int = 20_000  # 0: none; taken every this many steps
    keep_checkpoints: int = 2  # the newest N are kept; the older one stays until a newer one is complete
    progress: bool = True
    network: NetworkConfig = field(default_factory=NetworkConfig)  # Q-network (DQN) or actor (TD3)
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    td3: TD3Config = field(default_factory=TD3Config)
    sac: SACConfig = field(default_factory=SACConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)


ALGORITHMS = typing.get_args(typing.get_type_hints(TrainConfig)["algo"])  # dqn, td3, sac, ppo: each has a section


def critic_network(cfg: TrainConfig) -> NetworkConfig | None:
    """The algorithm's second network (TD3's and SAC's critics, PPO's value network); DQN has none."""
    return {"td3": cfg.td3.critic, "sac": cfg.sac.critic, "ppo": cfg.ppo.critic}.get(cfg.algo)


# ----------------------------------------------------------------------------- building from data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_EXPONENT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml_numbers(value: Any) -> Any:
    """`value` with the strings PyYAML (YAML 1.1) leaves unread, such as 1e-4, read as the numbers they are."""
    if isinstance(value, str) and _EXPONENT_LITERAL.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_yaml_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _yaml_numbers(v) for k, v in value.items()}
    return value


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp` and return it converted (int -> float, dict -> dataclass)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return _build(tp, value, path)
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, path)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{path} must be {_describe(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if tp is Any:
        return _yaml_numbers(value)
    if origin is dict:
        if value is None:  # `env_kwargs:` left empty in YAML
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{path} must be a mapping of names to values, got {value!r}")
        return {k: _coerce(v, typing.get_args(tp)[1], f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path} must be null, got {value!r}")
        return None
    if tp is float:
        if isinstance(value, str) and _EXPONENT_LITERAL.fullmatch(value.strip()):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{path} must be a finite number, got {value!r}")
            return float(value)  # PyYAML (YAML 1.1) reads 1e-4, without a dot, as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")


def _describe(tp: Any) -> str:
    parts = []
    for option in typing.get_args(tp):
        if option is type(None):
            parts.append("null")
        elif typing.get_origin(option) is list:
            parts.append(f"a list of {_type_name(typing.get_args(option)[0])}")
        elif typing.get_origin(option) is Literal:
            parts.append("one of " + ", ".join(map(str, typing.get_args(option))))
        else:
            parts.append({float: "a number", int: "an integer", str: "a string", bool: "a boolean"}.get(option, _type_name(option)))
    return " or ".join(parts)


def _build(cls: type, data: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in {path}" if path else ""
        raise ConfigError(f"unknown config key{where}: {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{path}.{name}" if path else name)
    return cls(**kwargs)


CRITIC_NORMALIZER_SETTINGS = ("normalize_obs", "obs_normalizer", "obs_clip")  # a critic reads its actor's


def config_from_dict(data: dict, stored: bool = False) -> TrainConfig:
    """A validated config from a mapping. `stored`: the config of an existing run (to resume, evaluate or export
    it), whose critic may hold normalizer settings that were accepted, and never read, before they were
    refused; they are put back to the defaults, with which that run trained the same."""
    if not isinstance(data, dict):
        raise ConfigError("a config file must hold a YAML mapping at its top level")
    if stored:
        data = copy.deepcopy(data)
        for section in ALGORITHMS:
            critic = data.get(section, {}).get("critic") if isinstance(data.get(section), dict) else None
            if isinstance(critic, dict):
                for name in CRITIC_NORMALIZER_SETTINGS:
                    critic.pop(name, None)
    cfg = _build(TrainConfig, data, "")
    validate(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten_settings(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as dotted keys, the override syntax (`network.neuron.alpha`) -> values."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing_settings(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The dotted keys of two flattened configs whose values differ, a key that only one of them sets
    included (a mapping such as env_kwargs, or a setting of another spikerl version, may be on one side only)."""
    return [k for k in {**a, **b} if (k in a, a.get(k)) != (k in b, b.get(k))]


def _unread_network_settings(net: dict[str, Any], is_critic: bool) -> list[str]:
    """The keys of one network's settings (`net`: its flattened section, without the prefix) that building and
    training it never reads. Each is left out on account of a setting that is kept, so two networks that
    differ in what they read still differ in what is kept."""
    unread = list(CRITIC_NORMALIZER_SETTINGS) if is_critic else []  # it reads its actor's normalizer
    if not is_critic and not net.get("normalize_obs", True):
        unread += ["obs_normalizer", "obs_clip"]  # either normalizer, disabled, passes observations through
    elif not is_critic and net.get("obs_normalizer") != "mean_std":
        unread.append("obs_clip")
    population_encoder = ["population_range", "population_std", "population_spikes"]
    if net.get("kind") == "ann":  # the ANN twin: its units, the input features, biases always
        return unread + [k for k in net if k.startswith("neuron.")] + population_encoder + [
            "population_size", "timesteps", "decoder", "readout_alpha", "readout_beta", "bias", "backend"]
    unread.append("activation")
    if net.get("encoder") != "population":
        unread += population_encoder
        if net.get("decoder") != "population":
            unread.append("population_size")
    if net.get("decoder") != "membrane":
        unread += ["readout_alpha", "readout_beta"]
    unread.append("neuron.surrogate_slope" if net.get("neuron.surrogate") == "rectangular" else "neuron.surrogate_width")
    if net.get("neuron.randomize") == "none":
        unread.append("neuron.spread")
    return unread


def settings_the_run_reads(flat: dict[str, Any]) -> dict[str, Any]:
    """Of a run's settings (`flatten_settings` of its config), those its training reads. Left out: the other
    algorithms' sections and, per network, what `_unread_network_settings` names (an ANN's spiking settings,
    a spiking network's `activation`, the population coding's settings of a network without it, a critic's
    normalizer...). So two runs that differ only in settings they never read (such as a default changed
    between the versions that wrote them) trained the same thing."""
    algo = flat.get("algo")
    unread_sections = tuple(f"{other}." for other in ALGORITHMS if other != algo)
    kept = {k: v for k, v in flat.items() if not k.startswith(unread_sections)}
    for prefix, is_critic in (("network.", False), (f"{algo}.critic.", True)):
        net = {k[len(prefix):]: v for k, v in kept.items() if k.startswith(prefix)}
        if "kind" in net:
            for key in _unread_network_settings(net, is_critic):
                kept.pop(prefix + key, None)
    return kept


def settings_some_run_reads(flat: dict[str, Any], variations) -> set[str]:
    """The keys of `flat` (a base config's `flatten_settings`) that some run reads, each run being the base with
    one of `variations` (dicts of dotted key -> value: a sweep's cells, a search space's choices) over it. A setting
    a variation switches on counts (the population encoder's std where one variation has that encoder)."""
    read = set()
    for variation in variations:
        read |= set(settings_the_run_reads({**flat, **variation}))
    return read


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value), the value read as YAML (so 0.5, true, [64, 64], null work)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key=value, for example network.neuron.theta=0.5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The raw mapping of a YAML config, with its `base:` file (relative to it) merged underneath."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"config file {path} includes itself through base:")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a YAML mapping at its top level")
    base = data.pop("base", None)
    if base is None:
        return data
    merged = read_config_file(path.parent / str(base), (*_seen, path.resolve()))
    _merge_raw(merged, data, empty_clears=True)
    return merged


def load_config(path: str | Path | None, overrides: list[str] = (), stored: bool = False) -> TrainConfig:
    """Read a YAML config (or start from defaults when `path` is None) and apply `key=value` overrides.

    A config may name another as `base: other.yaml` and change only what differs (the ANN twins do); an empty
    mapping there (`env_kwargs: {}`) clears what the base set. `stored`: an existing run's config.yaml
    (config_from_dict).
    """
    # Start from the defaults so a file or an override may set any single field.
    merged = config_to_dict(TrainConfig())
    if path is not None:
        _merge_raw(merged, read_config_file(path))
    return config_with_overrides(merged, overrides, stored)


def config_with_overrides(data: dict, overrides: list[str] = (), stored: bool = False) -> TrainConfig:
    """A config from a raw mapping (say, a stored resolved config) with `key=value` overrides applied."""
    merged = copy.deepcopy(data)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(merged, key, value)
    return config_from_dict(merged, stored)


def _merge_raw(target: dict, source: dict, empty_clears: bool = False) -> None:
    """Merge `source` into `target`, mapping by mapping. With `empty_clears` (a config file over its `base:`), an
    empty mapping clears what the base set there: `env_kwargs: {}` drops the base's keyword arguments, and an
    empty section such as `ppo: {}` leaves that section at its defaults."""
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict) and (value or not empty_clears):
            _merge_raw(target[key], value, empty_clears)
        else:
            target[key] = value


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write through a temporary file and a rename, so a crash never leaves half a config."""
    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# ----------------------------------------------------------------------------- validation


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _per_layer(value: PerLayer, n_layers: int, name: str) -> list[float]:
    if isinstance(value, list):
        _check(len(value) == n_layers, f"{name} lists {len(value)} values but the network has {n_layers} hidden layers")
        return list(value)
    return [value] * n_layers


def validate_network(net: NetworkConfig, path: str) -> None:
    n = net.neuron
    _check(len(net.hidden) >= 1, f"{path}.hidden must list at least one layer size")
    for i, size in enumerate(net.hidden):
        _check(size >= 1, f"{path}.hidden[{i}] must be >= 1, got {size}")
    _check(net.timesteps >= 1, f"{path}.timesteps (T) must be >= 1, got {net.timesteps}")
    for name in ("alpha", "beta"):
        for value in _per_layer(getattr(n, name), len(net.hidden), f"{path}.neuron.{name}"):
            _check(0.0 <= value <= 1.0, f"{path}.neuron.{name} must be in [0, 1] (a retention), got {value}")
    for value in _per_layer(n.theta, len(net.hidden), f"{path}.neuron.theta"):
        _check(value > 0.0, f"{path}.neuron.theta must be > 0, got {value}")
    for name in ("readout_alpha", "readout_beta"):
        value = getattr(net, name)
        _check(value is None or 0.0 <= value <= 1.0, f"{path}.{name} must be in [0, 1], got {value}")
    _check(n.spread >= 0.0, f"{path}.neuron.spread must be >= 0, got {n.spread}")
    _check(n.randomize != "uniform" or n.spread <= 1.0, f"{path}.neuron.spread must be <= 1 with uniform randomization, got {n.spread}")
    _check(n.surrogate_slope is None or n.surrogate_slope > 0, f"{path}.neuron.surrogate_slope must be > 0, got {n.surrogate_slope}")
    _check(n.surrogate_width > 0, f"{path}.neuron.surrogate_width must be > 0, got {n.surrogate_width}")
    _check(net.population_size >= 1, f"{path}.population_size must be >= 1, got {net.population_size}")
    _check(net.population_std > 0, f"{path}.population_std must be > 0, got {net.population_std}")
    _check(net.obs_clip > 0, f"{path}.obs_clip must be > 0, got {net.obs_clip}")
    _check(
        len(net.population_range) == 2 and net.population_range[0] < net.population_range[1],
        f"{path}.population_range must be [low, high] with low < high, got {net.population_range}",
    )
    if net.kind == "ann":
        _check(
            net.encoder in ("direct", "two_neuron"),
            f"{path}.encoder {net.encoder!r} makes spikes over time; an ANN takes 'direct' or 'two_neuron'",
        )


def validate_critic(critic: NetworkConfig, path: str) -> None:
    """A critic's (or value network's) settings: a network's, except the observation normalizer, which is its
    actor's (one normalizer per agent, as dsrl's critic reads the actor's input); a setting of it here would be
    silently ignored, so one that differs from the default is refused."""
    validate_network(critic, path)
    default = NetworkConfig()
    for name in CRITIC_NORMALIZER_SETTINGS:
        _check(getattr(critic, name) == getattr(default, name),
               f"{path}.{name} is not read: a critic reads the observations as its actor's normalizer gives them; "
               f"set network.{name}")


MAX_SEED = 2**32 - 1  # np.random.seed's largest


def validate(cfg: TrainConfig) -> None:
    _check(cfg.total_steps >= 1, f"total_steps must be >= 1, got {cfg.total_steps}")
    _check(cfg.total_episodes is None or cfg.total_episodes >= 1, f"total_episodes must be >= 1, got {cfg.total_episodes}")
    _check(cfg.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {cfg.checkpoint_every}")
    _check(cfg.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {cfg.keep_checkpoints}")
    _check(cfg.threads is None or cfg.threads >= 1, f"threads must be >= 1, got {cfg.threads}")
    _check(0 <= cfg.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}] (NumPy's seed range), got {cfg.seed}")
    # episode i of an evaluation resets with eval.seed + i; Gymnasium takes seeds >= 0
    _check(0 <= cfg.eval.seed <= MAX_SEED, f"eval.seed must be in [0, {MAX_SEED}], got {cfg.eval.seed}")
    _check(bool(cfg.env_id.strip()), "env_id must name a Gymnasium environment")
    _check(bool(DEVICE_PATTERN.match(cfg.device)), f"device must be auto, cpu, cuda or cuda:N; got {cfg.device!r}")
    validate_network(cfg.network, "network")
    _check(cfg.eval.every >= 0, f"eval.every must be >= 0, got {cfg.eval.every}")
    _check(cfg.video.every >= 0, f"video.every must be >= 0, got {cfg.video.every}")
    _check(cfg.video.episodes >= 1, f"video.episodes must be >= 1, got {cfg.video.episodes}")
    _check(cfg.video.fps is None or cfg.video.fps > 0, f"video.fps must be > 0, got {cfg.video.fps}")
    _check(not (cfg.video.raster and cfg.network.kind == "ann"), "video.raster shows hidden spikes; network.kind is ann")
    _check(cfg.eval.episodes >= 1, f"eval.episodes must be >= 1, got {cfg.eval.episodes}")
    _check(cfg.eval.final_episodes >= 1, f"eval.final_episodes must be >= 1, got {cfg.eval.final_episodes}")
    if cfg.algo == "dqn":
        d = cfg.dqn
        _check(cfg.network.decoder != "integrator" or cfg.network.kind == "ann",
               "network.decoder 'integrator' is the TD3 actor's readout; DQN uses 'membrane' or 'population'")
        _check(d.buffer_size >= d.batch_size >= 1, f"dqn.batch_size must be in [1, buffer_size], got {d.batch_size}")
        _check(0.0 <= d.gamma <= 1.0, f"dqn.gamma must be in [0, 1], got {d.gamma}")
        _check(d.learning_rate > 0, f"dqn.learning_rate must be > 0, got {d.learning_rate}")
        _check(d.train_every >= 1, f"dqn.train_every must be >= 1, got {d.train_every}")
        _check(d.gradient_steps >= 1, f"dqn.gradient_steps must be >= 1, got {d.gradient_steps}")
        _check(d.target_update_every >= 1, f"dqn.target_update_every must be >= 1, got {d.target_update_every}")
        _check(0.0 < d.tau <= 1.0, f"dqn.tau must be in (0, 1], got {d.tau}")
        for name in ("epsilon_start", "epsilon_end", "epsilon_decay"):
            value = getattr(d, name)
            _check(0.0 <= value <= 1.0, f"dqn.{name} must be in [0, 1], got {value}")
        _check(d.epsilon_decay_steps >= 1, f"dqn.epsilon_decay_steps must be >= 1, got {d.epsilon_decay_steps}")
        _check(d.learning_starts >= 0, f"dqn.learning_starts must be >= 0, got {d.learning_starts}")
        _check(d.max_grad_norm is None or d.max_grad_norm > 0, f"dqn.max_grad_norm must be > 0, got {d.max_grad_norm}")
    elif cfg.algo == "sac":
        a = cfg.sac
        _validate_actor_critic(a, "sac")
        _check(a.alpha_learning_rate is None or a.alpha_learning_rate > 0, "sac.alpha_learning_rate must be > 0")
        _check(a.alpha > 0, f"sac.alpha must be > 0, got {a.alpha}")
        _check(a.log_std_min < a.log_std_max, "sac.log_std_min must be below sac.log_std_max")
        _check(cfg.network.decoder != "population", "sac needs network.decoder membrane or integrator (mean and log-std)")
    elif cfg.algo == "ppo":
        _validate_ppo(cfg)
    else:
        t = cfg.td3
        _validate_actor_critic(t, "td3")
        _check(t.policy_delay >= 1, f"td3.policy_delay must be >= 1, got {t.policy_delay}")
        for name in ("exploration_noise", "target_noise", "target_noise_clip"):
            value = getattr(t, name)
            _check(value >= 0.0, f"td3.{name} must be >= 0, got {value}")


def _validate_actor_critic(section: TD3Config | SACConfig, name: str) -> None:
    """The settings TD3 and SAC share: replay, discount, Polyak coefficient, learning rates, warm-up, critic."""
    _check(section.buffer_size >= section.batch_size >= 1,
           f"{name}.batch_size must be in [1, buffer_size], got {section.batch_size}")
    _check(0.0 <= section.gamma <= 1.0, f"{name}.gamma must be in [0, 1], got {section.gamma}")
    _check(0.0 < section.tau <= 1.0, f"{name}.tau must be in (0, 1], got {section.tau}")
    _check(section.actor_learning_rate > 0 and section.critic_learning_rate > 0, f"{name} learning rates must be > 0")
    _check(section.learning_starts >= 0, f"{name}.learning_starts must be >= 0, got {section.learning_starts}")
    validate_critic(section.critic, f"{name}.critic")
    _check(section.critic.decoder == "membrane" or section.critic.kind == "ann",
           f"{name}.critic.decoder must be 'membrane': a critic's Q-value is an unbounded readout")


def _validate_ppo(cfg: TrainConfig) -> None:
    p = cfg.ppo
    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs"):
        _check(getattr(p, name) >= 1, f"ppo.{name} must be >= 1, got {getattr(p, name)}")
    rollout = p.num_envs * p.num_steps
    _check(rollout % p.num_minibatches == 0,
           f"ppo.num_minibatches ({p.num_minibatches}) must divide the rollout of ppo.num_envs x ppo.num_steps = "
           f"{rollout} transitions into equal minibatches")
    _check(not p.normalize_advantages or rollout // p.num_minibatches >= 2,
           f"ppo.num_minibatches ({p.num_minibatches}) leaves minibatches of one transition, whose advantages "
           "cannot be normalized; use fewer minibatches or ppo.normalize_advantages=false")
    if p.policy_num_minibatches is not None:
        _check(p.policy_num_minibatches >= 1 and p.num_minibatches % p.policy_num_minibatches == 0,
               f"ppo.policy_num_minibatches ({p.policy_num_minibatches}) must divide ppo.num_minibatches "
               f"({p.num_minibatches}): each policy step takes the mean over whole minibatches")
        _check(p.desired_kl is None or p.policy_num_minibatches == p.num_minibatches,
               "ppo.desired_kl adapts the policy's rate at every minibatch step; it does not combine with fewer "
               "ppo.policy_num_minibatches")
    _check(cfg.total_steps >= rollout, f"total_steps ({cfg.total_steps}) is less than one PPO rollout "
                                       f"(ppo.num_envs x ppo.num_steps = {rollout})")
    _check(p.learning_rate > 0, f"ppo.learning_rate must be > 0, got {p.learning_rate}")
    _check(p.policy_learning_rate is None or p.policy_learning_rate > 0,
           f"ppo.policy_learning_rate must be > 0, got {p.policy_learning_rate}")
    _check(p.desired_kl is None or p.desired_kl > 0, f"ppo.desired_kl must be > 0, got {p.desired_kl}")
    _check(p.log_std_learning_rate is None or p.log_std_learning_rate > 0,
           f"ppo.log_std_learning_rate must be > 0, got {p.log_std_learning_rate}")
    _check(p.adam_eps > 0, f"ppo.adam_eps must be > 0, got {p.adam_eps}")
    _check(p.policy_adam_eps is None or p.policy_adam_eps > 0, f"ppo.policy_adam_eps must be > 0, got {p.policy_adam_eps}")
    _check(p.policy_target_kl is None or p.policy_target_kl > 0,
           f"ppo.policy_target_kl must be > 0, got {p.policy_target_kl}")
    _check(p.policy_target_kl is None or p.update_epochs >= 2 or p.policy_kl_check == "minibatch",
           "ppo.policy_target_kl stops the policy between epochs; it needs ppo.update_epochs >= 2 "
           "(or ppo.policy_kl_check=minibatch)")
    _check(p.policy_kl_check == "epoch" or p.update_epochs * p.num_minibatches >= 2,
           "ppo.policy_kl_check=minibatch never checks an update's first step; it needs more than one "
           "(ppo.update_epochs x ppo.num_minibatches >= 2)")
    _check(p.policy_kl_check == "epoch" or p.policy_target_kl is not None,
           f"ppo.policy_kl_check={p.policy_kl_check} says where ppo.policy_target_kl is checked; set ppo.policy_target_kl")
    _check(p.policy_kl_check == "epoch" or p.policy_minibatch_count() == p.num_minibatches,
           "ppo.policy_kl_check=minibatch checks the KL before every policy step; it does not combine with fewer "
           "ppo.policy_num_minibatches")
    _check(not p.log_std_after_stop or p.policy_target_kl is not None,
           "ppo.log_std_after_stop keeps the log-std training once ppo.policy_target_kl has stopped the policy; "
           "set ppo.policy_target_kl")
    _check(p.policy_target_kl is None or p.desired_kl is None,
           "ppo.policy_target_kl and ppo.desired_kl both bound the policy's KL per update; set one of them")
    start, (lowest, highest) = p.starting_policy_learning_rate(), ADAPTIVE_RATE_BOUNDS
    _check(p.desired_kl is None or lowest <= start <= highest,
           f"with ppo.desired_kl the policy's learning rate adapts within [{lowest:g}, {highest:g}]; it starts at {start:g}")
    for name in ("gamma", "gae_lambda"):
        _check(0.0 <= getattr(p, name) <= 1.0, f"ppo.{name} must be in [0, 1], got {getattr(p, name)}")
    for name in ("clip_coef", "max_grad_norm", "reward_clip", "policy_output_scale"):
        _check(getattr(p, name) > 0, f"ppo.{name} must be > 0, got {getattr(p, name)}")
    for name in ("entropy_coef", "value_coef"):
        _check(getattr(p, name) >= 0, f"ppo.{name} must be >= 0, got {getattr(p, name)}")
    _check(cfg.network.decoder != "population", "ppo needs network.decoder membrane or integrator")
    validate_critic(p.critic, "ppo.critic")
    _check(p.critic.decoder == "membrane" or p.critic.kind == "ann",
           "ppo.critic.decoder must be 'membrane': a value is an unbounded readout")
