"""The one training loop: K agents of one algorithm trained in lockstep (an ordinary run is K = 1).

The loop owns the agents (`spikerl.rl.agent`: environment, generators, episode books, run folder),
the stacked observation normalizer, evaluations, divergence checks, checkpoints and resume. The
algorithm builds each agent's networks with `build` (they come back stacked along a leading agents
dimension, `spikerl.snn.stacked`), owns its update, and calls `begin`, then per step `env_step`,
`check_finite` on each per-agent loss and `after_step`, which returns True once no agent trains on.

An on-policy algorithm (PPO) gives each agent `envs_per_agent` environments, steps them together with
`vector_step` (observations [K, N, d]; the step count advances N per call), calls `after_step` with
`boundary=False, evaluate=False` inside a rollout and `after_update` after its update: evaluations,
checkpoints and the end of training fall on rollout boundaries, so an evaluation scores the policy
saved at its step and a checkpoint never holds half a rollout.

An agent stops alone: when a periodic evaluation reaches its `eval.stop_at_return`, when its
`total_episodes` are done, or when its loss or weights stop being finite (diverged.json in its folder;
the others go on). Its final model and evaluation are written at that step, so its files are those of
the same config trained alone. A stopped agent's rows are still computed (the stacked tensors keep
their shape) but never read again.

Checkpoints are taken every `checkpoint_every` steps and hold every agent (a population of one keeps
them in its run folder, a larger population in its own folder). Each agent's environment is rebuilt
mid-episode by replaying the episode's actions from its recorded start (`Agent.restore`), so a resumed
run continues exactly as the uninterrupted one (tested by killing runs with SIGKILL).
"""

from __future__ import annotations

import itertools
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from spikerl.config import TrainConfig
from spikerl.devices import resolve_device
from spikerl.errors import SpikerlError, TrainingDiverged
from spikerl.rl.agent import Agent
from spikerl.rl.evaluate import best_moving_average, evaluate_agents
from spikerl.rl.run import CheckpointStore, Run
from spikerl.snn.encoders import ObservationNormalizer, observation_normalizer
from spikerl.snn.stacked import stack_modules, unstack_state


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) globally; each agent has its own generators besides."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True


def resident_memory_mib() -> float | None:
    """This process's resident memory (Linux /proc; None elsewhere), for the memory curve in TensorBoard."""
    try:
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def as_obs_tensor(obs: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """One observation as a batch of one on `device`."""
    return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device).unsqueeze(0)


def _tensor_bytes(state) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_tensor_bytes(v) for v in state)
    return 0


@torch.no_grad()
def grad_norm_per_agent(parameters) -> torch.Tensor:
    """Each agent's joint 2-norm of the gradients of stacked `parameters` (leading dimension: agents), [K]."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1)
                                                 for g in grads]), dim=0)


@torch.no_grad()
def clip_grad_norm_per_agent(parameters, max_norm: float, norms: torch.Tensor | None = None) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for stacked agents: each agent's gradients (leading dimension of
    every parameter) scaled so that their joint 2-norm is at most `max_norm`; returns the norms [K]. `norms`:
    `grad_norm_per_agent` of these same parameters where the caller has it already."""
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = grad_norm_per_agent(parameters) if norms is None else norms
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.reshape(-1, *([1] * (g.dim() - 1))))
    return norms


def _reached(step: int, every: int, stride: int) -> bool:
    """Whether the last `stride` steps, ending at `step`, reached a multiple of `every` (step % every == 0 for one)."""
    return step // every != (step - stride) // every


def reached_stop_return(cfg: TrainConfig, result: dict) -> bool:
    """Whether an evaluation `result` reaches the agent's `eval.stop_at_return`: the agent then stops."""
    target = cfg.eval.stop_at_return
    return target is not None and result["mean_return"] >= target


def _finite_per_agent(tensor: torch.Tensor) -> np.ndarray:
    """Whether each agent's slice (leading dimension) of a stacked tensor is finite everywhere."""
    return torch.isfinite(tensor.detach()).reshape(tensor.shape[0], -1).all(dim=1).cpu().numpy()


class TrainingLoop:
    """The population's agents, normalizer, progress, evaluations, divergence checks and checkpoints.

    `cfgs` are the agents' configs (one algorithm, environment and network shape; see
    `spikerl.rl.population` for what may differ), `runs` their run folders (None for an agent that had
    finished before), `store` where the population's checkpoints go. `envs_per_agent` None: one
    environment per agent, observations [K, d]; N: N environments per agent, observations [K, N, d]."""

    def __init__(self, cfgs: list[TrainConfig], runs: list[Run | None], store: CheckpointStore,
                 envs_per_agent: int | None = None):
        self.cfg = cfgs[0]  # the settings every agent shares
        seed_everything(self.cfg.seed)
        self.store = store
        self.device = resolve_device(self.cfg.device)
        if self.cfg.video.every:
            from spikerl.video.record import prepare_rendering

            prepare_rendering(self.cfg.env_id, self.cfg.env_kwargs)  # MuJoCo's OpenGL is chosen before the environment imports MuJoCo
        self.vector = envs_per_agent is not None
        self.agents = [Agent(k, cfg, run, envs_per_agent or 1) for k, (cfg, run) in enumerate(zip(cfgs, runs))]
        env = self.agents[0].env
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.obs_norm = observation_normalizer(self.cfg.network, self.observation_space.shape[0]).stacked(len(self.agents))
        self.obs_norm.to(self.device)
        self.policy: nn.Module | None = None  # stacked; `policy(obs [K, B, d])` acts greedily or noise-free
        self.components: dict[str, nn.Module | torch.optim.Optimizer] = {}
        self.buffer = None
        self.next_checkpoint = self.cfg.checkpoint_every
        self.last_checkpoint: tuple[int, str] | None = None
        self.backends: dict[str, str] = {}  # the backend each network ran on (final_eval.json); the algorithm sets it
        self.start = time.perf_counter()
        self.progress = None  # the bar, from begin(); messages go through tqdm.write, which needs none

    @property
    def size(self) -> int:
        return len(self.agents)

    def active_agents(self) -> list[Agent]:
        return [agent for agent in self.agents if agent.active]

    # ------------------------------------------------------------------ building

    def build(self, make: Callable[[Agent, ObservationNormalizer], tuple[nn.Module, ...]]) -> tuple[nn.Module, ...]:
        """Each agent's modules, made by `make(agent, its normalizer)` with the global torch generator seeded
        with the agent's seed (initial weights as its run alone draws them), stacked across agents, each
        reading the population's normalizer. Each agent's torch generator continues from there."""
        per_agent = []
        for agent in self.agents:
            torch.manual_seed(agent.cfg.seed)
            norm = observation_normalizer(agent.cfg.network, self.observation_space.shape[0]).to(self.device)
            per_agent.append(make(agent, norm))
            agent.torch_generator.set_state(torch.get_rng_state())
        stacked = tuple(stack_modules(list(group)) for group in zip(*per_agent))
        for module in stacked:
            self.share_normalizer(module)
        return stacked

    def share_normalizer(self, module: nn.Module) -> None:
        """Point every `obs_norm` inside `module` (a stacked module or a copy of one) at the population's."""
        for sub in list(module.modules()):
            if isinstance(getattr(sub, "obs_norm", None), ObservationNormalizer):
                sub.obs_norm = self.obs_norm

    def per_agent(self, value: Callable[[TrainConfig], float], dtype: torch.dtype = torch.float32) -> float | torch.Tensor:
        """A setting that agents may differ in: a Python number when they all agree (the arithmetic of a run
        alone, bit for bit: torch multiplies by a Python number in double precision), else a [K, 1] tensor
        of `dtype` on the device, which broadcasts against [K, B] batches."""
        values = [float(value(agent.cfg)) for agent in self.agents]
        if len(set(values)) == 1:
            return values[0]
        return torch.tensor([[v] for v in values], dtype=dtype, device=self.device)

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal noise [K, *shape], each agent's drawn from its own torch generator."""
        return torch.stack([torch.randn(shape, generator=agent.torch_generator) for agent in self.agents]).to(self.device)

    def uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniform [0, 1) noise [K, *shape], each agent's drawn from its own torch generator."""
        return torch.stack([torch.rand(shape, generator=agent.torch_generator) for agent in self.agents]).to(self.device)

    def random_actions(self) -> list:
        """Each training agent's action space sampled (warm-up); a stopped agent's row is zeros."""
        return [agent.env.action_space.sample() if agent.active else np.zeros(self.action_space.shape, np.float32)
                for agent in self.agents]

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        """The agents' observations as a batch per agent: [K, d] -> [K, 1, d]; [K, N, d] stays."""
        tensor = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return tensor if self.vector else tensor.unsqueeze(1)

    # ------------------------------------------------------------------ start, new or resumed

    def begin(self, checkpoint: dict | None, *, components: dict[str, nn.Module | torch.optim.Optimizer], buffer,
              policy: nn.Module) -> tuple[int, np.ndarray]:
        """Restore `checkpoint` if given; return the last completed step and the agents' observations, [K, d]
        ([K, N, d] with several environments per agent). `buffer`: the replay buffer, or None (on-policy)."""
        self.components, self.buffer, self.policy = components, buffer, policy
        self.store.check_free_space(self.checkpoint_bytes(), bool(self.cfg.checkpoint_every))
        if checkpoint is None:
            step, obs = 0, self._per_agent_layout(np.stack([agent.reset() for agent in self.agents]))
            self.observe(obs)
            for agent in self.active_agents():
                agent.run.open_logs(None)
        else:
            step, obs = self.restore(checkpoint)
            # A run resumed from the checkpoint at its last episode (or given a lower total_episodes) ends there.
            self.finish_agents(step, [agent for agent in self.active_agents() if agent.episodes_done()])
        agents = f"{self.size} agents, " if self.size > 1 else ""
        self.progress = tqdm(total=self.cfg.total_steps, initial=step, disable=not self.cfg.progress, unit="step",
                             dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0,
                             desc=f"{agents}{self.cfg.algo}-{self.cfg.network.kind} {self.cfg.env_id}")
        return step, obs

    def remaining_steps(self, step: int) -> range:
        """The steps still to train after `step`, up to `total_steps` (none if no agent trains on)."""
        return range(step + 1, step + 1 if not self.active_agents() else self.cfg.total_steps + 1)

    def _per_agent_layout(self, obs: np.ndarray) -> np.ndarray:
        """[K, N, d] as the algorithm sees it: [K, d] with one environment per agent."""
        return obs if self.vector else obs[:, 0]

    def observe(self, obs: np.ndarray) -> None:
        self.obs_norm.update(self.obs_tensor(obs))

    def checkpoint_bytes(self) -> int:
        """About the size of one checkpoint: tensors now, Adam's two moments per parameter, the full buffer."""
        size = self.buffer.nbytes if self.buffer is not None else 0
        for component in self.components.values():
            size += _tensor_bytes(component.state_dict())
            if isinstance(component, torch.optim.Optimizer):
                size += 2 * sum(_tensor_bytes(p) for group in component.param_groups for p in group["params"])
        return size + 2**20

    def state(self, step: int, obs: np.ndarray) -> dict:
        return {
            "algo": self.cfg.algo, "env_id": self.cfg.env_id, "env_kwargs": self.cfg.env_kwargs,
            "agents": [str(a.cfg.run_dir) for a in self.agents],
            "components": {name: c.state_dict() for name, c in self.components.items()},
            "buffer": self.buffer.state_dict() if self.buffer is not None else None, "torch": torch.get_rng_state(),
            "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
            "agent_states": [agent.state(obs[agent.index] if self.vector else obs[agent.index][None]) for agent in self.agents],
            "loop": {"elapsed_s": time.perf_counter() - self.start, "next_checkpoint": self.next_checkpoint},
        }

    def restore(self, checkpoint: dict) -> tuple[int, np.ndarray]:
        if checkpoint.get("algo") != self.cfg.algo or checkpoint.get("env_id") != self.cfg.env_id:
            raise SpikerlError(f"the checkpoint is from {checkpoint.get('algo')} on {checkpoint.get('env_id')}, "
                               f"but the run's config says {self.cfg.algo} on {self.cfg.env_id}")
        if checkpoint.get("env_kwargs", {}) != self.cfg.env_kwargs:  # checkpoints before env_kwargs: none
            raise SpikerlError(f"the checkpoint is from {self.cfg.env_id} with env_kwargs {checkpoint.get('env_kwargs', {})}, "
                               f"but the run's config gives {self.cfg.env_kwargs}")
        if len(checkpoint.get("agent_states", ())) != self.size:
            raise SpikerlError(f"the checkpoint holds {len(checkpoint.get('agent_states', ()))} agents, "
                               f"the population {self.size}")
        try:
            for name, component in self.components.items():
                component.load_state_dict(checkpoint["components"][name])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise SpikerlError(f"the checkpoint does not fit the networks the run's config describes: "
                               f"{str(exc).splitlines()[0]}") from None
        if self.buffer is not None:
            self.buffer.load_state_dict(checkpoint["buffer"])
        torch.set_rng_state(checkpoint["torch"])
        if checkpoint.get("torch_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["torch_cuda"][:torch.cuda.device_count()])
        step = checkpoint["step"]
        obs = []
        for agent, state in zip(self.agents, checkpoint["agent_states"]):
            obs.append(agent.restore(state))
            if agent.active:
                agent.run.open_logs({"step": step, "logs": state["logs"]})
        loop = checkpoint["loop"]
        self.next_checkpoint = loop["next_checkpoint"]
        self.start = time.perf_counter() - loop["elapsed_s"]
        self.last_checkpoint = (step, str(self.store.path(step)))
        return step, self._per_agent_layout(np.stack(obs))

    # ------------------------------------------------------------------ every step

    def env_step(self, step: int, obs: np.ndarray, actions: list) -> np.ndarray:
        """Step every training agent's environment, store the transitions (a stopped agent's row repeats its
        last one), keep the episode books; return the observations to act on next [K, d]."""
        stored_next, act_next = obs.copy(), obs.copy()
        rewards, ends = np.zeros(self.size, np.float32), np.zeros(self.size, np.float32)
        for agent in self.agents:
            if not agent.active:
                continue
            k = agent.index
            stored_next[k], rewards[k], ends[k], episode_over, act_next[k], _ = agent.step(actions[k])
            if episode_over:
                agent.end_episode(step)
        self.observe(stored_next)
        self.buffer.add(obs, np.asarray(actions), rewards, stored_next, ends)
        if self.progress is not None and self.size == 1 and self.agents[0].recent_returns:
            self.progress.set_postfix(ret=f"{np.mean(self.agents[0].recent_returns):.1f}", refresh=False)
        return act_next

    def vector_step(self, step: int, obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Step each training agent's N environments with `actions` [K, N, ...] and keep the episode books
        (`step`: the agents' environment steps after this one). Returns the observations to act on next
        [K, N, d] (the new episode's first where one ended), the rewards [K, N], whether each episode ended
        [K, N] and whether it was cut by the time limit rather than terminated [K, N], and the observations the
        steps reached [K, N, d] (the last of an episode that ended). A stopped agent's rows are zeros."""
        act_next, reached = obs.copy(), obs.copy()
        rewards, ended, truncated = (np.zeros(obs.shape[:2], np.float32) for _ in range(3))
        for agent in self.active_agents():
            k = agent.index
            for i in range(len(agent.slots)):
                reached[k, i], rewards[k, i], _, over, act_next[k, i], terminated = agent.step(actions[k][i], i)
                if over:
                    ended[k, i], truncated[k, i] = 1.0, float(not terminated)
                    agent.end_episode(step, i)
                    if agent.episodes_done():  # its budget is spent: no episode beyond it is logged
                        break
        self.observe(act_next)
        return act_next, rewards, ended, truncated, reached

    def check_finite(self, step: int, name: str, values: torch.Tensor) -> None:
        """`values`: one loss per agent, [K]; an agent whose loss is not finite stops as diverged."""
        finite = _finite_per_agent(values.reshape(self.size, -1))
        for agent in self.active_agents():
            if not finite[agent.index]:
                self.stop_diverged(agent, step, f"{name} is {values.detach().reshape(self.size, -1)[agent.index, 0].item()}")

    def check_states_finite(self, step: int) -> None:
        for name, component in self.components.items():
            if isinstance(component, nn.Module):
                for key, tensor in component.state_dict().items():
                    if not tensor.is_floating_point():
                        continue
                    finite = _finite_per_agent(tensor)
                    for agent in self.active_agents():
                        if not finite[agent.index]:
                            self.stop_diverged(agent, step, f"{name}.{key} holds NaN or infinite values")

    def stop_diverged(self, agent: Agent, step: int, what: str) -> None:
        if self.last_checkpoint:
            good = f"the last good checkpoint is {self.last_checkpoint[1]} (step {self.last_checkpoint[0]})"
        else:
            good = "no checkpoint was written before it"
        agent.write_diverged(step, what, self.last_checkpoint and self.last_checkpoint[1])
        agent.diverged = f"training diverged at step {step}: {what}; stopped without saving it; {good}"
        agent.active, agent.status = False, "diverged"
        agent.run.close()
        if self.size > 1:
            tqdm.write(f"{agent.name}: {agent.diverged}")

    def steps_per_second(self, step: int) -> float:
        return step / max(time.perf_counter() - self.start, 1e-9)

    def after_step(self, step: int, obs: np.ndarray, stride: int = 1, boundary: bool = True, evaluate: bool = True) -> bool:
        """Books, evaluations, videos and stops after `step` (`stride` environment steps per agent since the last
        call; what is due every E steps runs when `step` reaches or passes a multiple of E), then, at a
        `boundary`, the end of training and checkpoints (see `boundary`). True once no agent trains on.
        `evaluate` False leaves evaluations and videos to `after_update` (inside an on-policy rollout the
        weights are those of the previous update)."""
        self.progress.update(stride)
        stopping: list[Agent] = []
        if _reached(step, 1000, stride):
            self.check_states_finite(step)
            scalars = {"charts/SPS": self.steps_per_second(step)}
            rss = resident_memory_mib()
            if rss is not None:
                scalars.update({"perf/rss_mib": rss, "perf/peak_rss_mib": peak_memory_mib()})
            for agent in self.active_agents():
                agent.run.log_scalars(step, scalars)
        if evaluate:
            stopping += self.evaluations(step, stride)
        stopping += [agent for agent in self.active_agents() if agent.episodes_done() and agent not in stopping]
        return self._stop(step, obs, stopping, boundary)

    def evaluations(self, step: int, stride: int) -> list[Agent]:
        """The periodic evaluations and videos due in the last `stride` steps; the agents that reached their
        `eval.stop_at_return`."""
        stopping = []
        if self.cfg.eval.every and _reached(step, self.cfg.eval.every, stride):
            stopping += self.periodic_eval(step)
        if self.cfg.video.every and _reached(step, self.cfg.video.every, stride):
            for agent in self.active_agents():
                self.record_video(agent, step)
        return stopping

    def after_update(self, step: int, obs: np.ndarray, stride: int, final: bool = False) -> bool:
        """On-policy: after the update that ends a rollout of `stride` steps per agent, the evaluations and
        videos due in it (of the updated policy, logged at this step), then the `boundary`."""
        return self._stop(step, obs, self.evaluations(step, stride), True, final)

    def _stop(self, step: int, obs: np.ndarray, stopping: list[Agent], boundary: bool, final: bool = False) -> bool:
        """Finish the `stopping` agents, unless training ends at this `boundary` anyway (then `boundary` finishes
        every agent at once); True once no agent trains on."""
        if stopping and not (boundary and (final or step >= self.cfg.total_steps)):
            self.finish_agents(step, stopping)
        return self.boundary(step, obs, final) if boundary else not self.active_agents()

    def boundary(self, step: int, obs: np.ndarray, final: bool = False) -> bool:
        """Where training may end and be checkpointed (every step, or after each of PPO's updates): at
        `total_steps` (or a `final` step short of it) every agent finishes; a checkpoint is taken once
        `checkpoint_every` is reached. True once no agent trains on."""
        if final or step >= self.cfg.total_steps:
            self.finish_agents(step, self.active_agents())
        # Saved after the stops, so no checkpoint holds an agent that stopped at its step as still training;
        # none once every agent stopped (nothing would resume from it, and a diverged run's stays its last good one).
        if self.cfg.checkpoint_every and step >= self.next_checkpoint and self.active_agents():
            self.check_states_finite(step)
            self.next_checkpoint = (step // self.cfg.checkpoint_every + 1) * self.cfg.checkpoint_every
            if self.active_agents():
                path = self.store.save(step, self.state(step, obs))
                self.last_checkpoint = (step, str(path))
        return not self.active_agents()

    def periodic_eval(self, step: int) -> list[Agent]:
        """Evaluate every training agent; return those that reached their `eval.stop_at_return`."""
        agents = self.active_agents()
        results = evaluate_agents(self.policy, [a.index for a in agents], self.size, self.cfg.env_id,
                                  self.cfg.eval.episodes, self.cfg.eval.seed, self.device, self.cfg.env_kwargs)
        stopping = []
        for agent, result in zip(agents, results):
            agent.run.log_eval(step, result)
            agent.last_eval = (step, result)
            agent.best_eval = max(agent.best_eval if agent.best_eval is not None else -np.inf, result["mean_return"])
            who = f"{agent.run.dir.name}: " if self.size > 1 else ""
            tqdm.write(f"{who}step {step}: eval mean return {result['mean_return']:.1f} "
                                f"+- {result['std_return']:.1f} over {result['episodes']} episodes")
            for listener in agent.run.eval_listeners:
                listener(step, result)
            if reached_stop_return(agent.cfg, result):
                tqdm.write(f"{who}step {step}: reached eval.stop_at_return = {agent.cfg.eval.stop_at_return}, "
                                    "stopping")
                stopping.append(agent)
        return stopping

    def agent_policy(self, agent: Agent) -> nn.Module:
        """The agent's policy as its own (unstacked) module, as `spikerl eval` loads it."""
        from spikerl.rl import algorithm_module

        with torch.random.fork_rng():  # building it draws initial weights: not from the training's stream
            policy = algorithm_module(self.cfg.algo).make_policy(agent.cfg, agent.env, self.device)
        policy.load_state_dict(unstack_state(self.policy, agent.index))
        policy.eval()
        return policy

    def record_video(self, agent: Agent, step: int) -> None:
        """An evaluation video: videos/step_N.mp4 in the agent's run folder, and a GIF of it in TensorBoard."""
        from spikerl.video.record import downscaled, gif_bytes, write_video

        v = self.cfg.video
        # The GIF keeps every k-th frame, downscaled, so that a long episode stays near 300 small frames in memory.
        spec = agent.env.spec
        limit = spec.max_episode_steps if spec and spec.max_episode_steps else 1000
        stride = max(1, -(-limit * v.episodes // 300))
        kept: list[np.ndarray] = []
        frame_numbers = itertools.count()

        def keep(frame: np.ndarray) -> None:
            if next(frame_numbers) % stride == 0:
                kept.append(downscaled(frame))

        info = write_video(self.agent_policy(agent), self.cfg.env_id, agent.run.dir / "videos" / f"step_{step}.mp4",
                           v.episodes, self.cfg.eval.seed, v.raster, v.fps, on_frame=keep, env_kwargs=self.cfg.env_kwargs)
        agent.run.log_gif(step, "eval/video", gif_bytes(kept, info["fps"] / stride), kept[0].shape)

    # ------------------------------------------------------------------ the end

    def has_updated(self) -> bool:
        """Whether the policy has taken a gradient step: an optimizer holds a tensor's state only after its first
        (TD3's critics step before its delayed actor)."""
        optimizers = [c for c in self.components.values() if isinstance(c, torch.optim.Optimizer)]
        return any(q in optimizer.state for optimizer in optimizers for q in self.policy.parameters())

    def finish_agents(self, step: int, agents: list[Agent]) -> None:
        """Final evaluation over eval.final_episodes, final model and summary in each agent's run folder."""
        self.check_states_finite(step)
        agents = [agent for agent in agents if agent.active]
        episodes = self.cfg.eval.final_episodes
        fresh = [a for a in agents if not (a.last_eval and a.last_eval[0] == step and a.last_eval[1]["episodes"] == episodes)]
        # An evaluation at this step on the same seeds is reused: evaluating again would repeat it.
        results = dict(zip((a.index for a in fresh), evaluate_agents(
            self.policy, [a.index for a in fresh], self.size, self.cfg.env_id, episodes, self.cfg.eval.seed,
            self.device, self.cfg.env_kwargs))) if fresh else {}
        wall = time.perf_counter() - self.start
        untrained = agents and not self.has_updated()
        for agent in agents:
            if untrained:  # total_episodes or stop_at_return reached before learning started
                who = f"{agent.run.dir.name}: " if self.size > 1 else ""
                tqdm.write(f"{who}training ended at step {step}, before the first update: final_model.pt "
                                    "holds the untrained policy")
            result = results.get(agent.index)
            if result is None:
                result = agent.last_eval[1]
            else:
                agent.run.log_eval(step, result)
            best = max(agent.best_eval if agent.best_eval is not None else -np.inf, result["mean_return"])
            train_average = best_moving_average(agent.run.training_returns())
            extra = {"global_step": step, "train_episodes": agent.episodes, "wall_time_s": wall,
                     "steps_per_second": step / max(wall, 1e-9), "best_eval_mean_return": float(best),
                     "best_train_average": train_average and train_average[0],
                     "best_train_average_episode": train_average and train_average[1],
                     "device": str(self.device), "backends": self.backends, "run_dir": str(agent.run.dir)}
            if self.size > 1:
                extra["population"] = {"agents": self.size, "index": agent.index}
            agent.run.save_final(agent.cfg, unstack_state(self.policy, agent.index), result, extra)
            agent.run.close()
            agent.result = {**result, **extra}
            agent.active, agent.status = False, "finished"

    def finish(self, step: int) -> list[dict]:
        """Finish the agents still training at `step` (a resumed run given a lower total_steps than its checkpoint's
        step ends there), close everything; the results of the agents that finished in this process, in agent
        order (a diverged agent's: {"diverged": message, "run_dir": ...}). A population of one that diverged
        raises TrainingDiverged, as a run always did."""
        self.finish_agents(step, self.active_agents())
        self.progress.close()
        for agent in self.agents:
            agent.close()
        if self.size == 1 and self.agents[0].diverged:
            raise TrainingDiverged(self.agents[0].diverged)
        return [getattr(agent, "result", None) or ({"diverged": agent.diverged, "run_dir": str(agent.run.dir)}
                                                   if agent.diverged else None) for agent in self.agents]
