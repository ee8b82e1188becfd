"""The training loop DQN and TD3 share around their updates: environment, observation statistics,
episodes, progress, evaluation, divergence checks, checkpoints and resume.

The loop owns the environment and the observation normalizer: it creates both, steps the one and
updates the other with every observation it collects; the algorithm builds its networks on the
normalizer (they only read it) and owns its update.

Checkpoints are taken at episode boundaries: at the first episode end at or after every multiple of
`checkpoint_every` steps. There the environment's only state is its random number generators, so
a resumed run resets the environment exactly as the uninterrupted run did and continues
identically (same final model, same metric rows; tested by killing a run with SIGKILL).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import resource
import sys
import time
from collections import deque

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from spikerl.config import TrainConfig
from spikerl.devices import resolve_device
from spikerl.errors import SpikerlError, TrainingDiverged
from spikerl.rl.checkpoint import capture_rng_state, env_rng_state, restore_env_rng_state, restore_rng_state
from spikerl.rl.envs import make_env
from spikerl.rl.evaluate import best_moving_average, evaluate
from spikerl.rl.run import Run
from spikerl.snn.encoders import RunningMaxAbs


def seed_everything(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """Seed Python, NumPy and torch (CPU and CUDA); return the run's NumPy generator and the membrane-draw
    generator (a CPU generator: the same draw whatever the device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


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


class TrainingLoop:
    """Environment, observation statistics, episode books, progress bar, evaluations, divergence checks,
    checkpoints and resume.

    Made with the config and run folder, it creates the environment (`env`, its action space seeded),
    the observation normalizer (`obs_norm`) and resolves the device (`device`). The algorithm builds its
    networks on those, then calls `begin` with what a checkpoint must hold (`components`: every module
    and optimizer), its replay buffer and its policy (the module whose `act` is greedy); then `env_step` to act, `check_finite` on each
    loss, and `after_step`, which returns True when training should stop (a periodic evaluation reached
    `eval.stop_at_return`, or `total_episodes` episodes are done); `finish` at the end.
    """

    def __init__(self, cfg: TrainConfig, run: Run, rng: np.random.Generator):
        self.cfg, self.run, self.rng = cfg, run, rng
        self.device = resolve_device(cfg.device)
        if cfg.video.every:
            from spikerl.video.record import prepare_rendering

            prepare_rendering(cfg.env_id)  # MuJoCo's OpenGL is chosen before the environment imports MuJoCo
        self.env = make_env(cfg.env_id, cfg.algo)
        self.env.action_space.seed(cfg.seed)
        self.obs_norm = RunningMaxAbs(self.env.observation_space.shape[0], enabled=cfg.network.normalize_obs)
        self.obs_norm.to(self.device)
        self.policy: nn.Module | None = None  # has `act(obs)` (greedy or noise-free) and `net`
        self.components: dict[str, nn.Module | torch.optim.Optimizer] = {}
        self.buffer = None
        self.recent_returns: deque[float] = deque(maxlen=10)
        self.episode_return, self.episode_length, self.episodes = 0.0, 0, 0
        self.best_eval: float | None = None
        self.last_eval: tuple[int, dict] | None = None  # (step, result) of the latest periodic evaluation
        self.next_checkpoint = cfg.checkpoint_every
        self.last_checkpoint: tuple[int, str] | None = None
        self.env_rng_before_reset: dict | None = None  # set when an episode ended in the current step
        self.start = time.perf_counter()
        self.progress = None

    # ------------------------------------------------------------------ start, new or resumed

    def begin(self, checkpoint: dict | None, *, components: dict[str, nn.Module | torch.optim.Optimizer], buffer,
              policy: nn.Module) -> tuple[int, np.ndarray]:
        """Restore `checkpoint` if given; return the last completed step and the first observation."""
        self.components, self.buffer, self.policy = components, buffer, policy
        self.run.check_free_space(self.checkpoint_bytes())
        if checkpoint is None:
            self.run.open_logs(None)
            obs, _ = self.env.reset(seed=self.cfg.seed)
            self.observe(obs)
            step = 0
        else:
            step = self.restore(checkpoint)
            self.run.open_logs(checkpoint)
            obs, _ = self.env.reset()  # the same reset the uninterrupted run made after this episode end
        self.progress = tqdm(total=self.cfg.total_steps, initial=step, disable=not self.cfg.progress, unit="step",
                             dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0,
                             desc=f"{self.cfg.algo}-{self.cfg.network.kind} {self.cfg.env_id}")
        return step, obs

    def episodes_done(self) -> bool:
        """Whether the `total_episodes` budget (if any) is spent."""
        return self.cfg.total_episodes is not None and self.episodes >= self.cfg.total_episodes

    def remaining_steps(self, step: int) -> range:
        """The steps still to train after `step`: none if `total_episodes` were done before it (a run resumed
        from the checkpoint at its last episode end), else up to `total_steps`."""
        return range(step + 1, step + 1 if self.episodes_done() else self.cfg.total_steps + 1)

    def observe(self, obs: np.ndarray) -> None:
        self.obs_norm.update(torch.as_tensor(obs).to(self.device))

    def checkpoint_bytes(self) -> int:
        """About the size of one checkpoint: tensors now, Adam's two moments per parameter, the full buffer."""
        size = self.buffer.nbytes
        for component in self.components.values():
            size += _tensor_bytes(component.state_dict())
            if isinstance(component, torch.optim.Optimizer):
                size += 2 * sum(_tensor_bytes(p) for group in component.param_groups for p in group["params"])
        return size + 2**20

    def state(self, step: int) -> dict:
        return {
            "algo": self.cfg.algo, "env_id": self.cfg.env_id,
            "components": {name: c.state_dict() for name, c in self.components.items()},
            "buffer": self.buffer.state_dict(), "rng": capture_rng_state(self.rng), "env_rng": self.env_rng_before_reset,
            "loop": {"episodes": self.episodes, "recent_returns": list(self.recent_returns), "best_eval": self.best_eval,
                     "last_eval": self.last_eval, "elapsed_s": time.perf_counter() - self.start,
                     "next_checkpoint": self.next_checkpoint},
            "logs": self.run.log_offsets(),
        }

    def restore(self, checkpoint: dict) -> int:
        if checkpoint.get("algo") != self.cfg.algo or checkpoint.get("env_id") != self.cfg.env_id:
            raise SpikerlError(f"the checkpoint is from {checkpoint.get('algo')} on {checkpoint.get('env_id')}, "
                               f"but the run's config says {self.cfg.algo} on {self.cfg.env_id}")
        try:
            for name, component in self.components.items():
                component.load_state_dict(checkpoint["components"][name])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise SpikerlError(f"the checkpoint does not fit the networks the run's config describes: "
                               f"{str(exc).splitlines()[0]}") from None
        self.buffer.load_state_dict(checkpoint["buffer"])
        restore_rng_state(checkpoint["rng"], self.rng)
        restore_env_rng_state(self.env, checkpoint["env_rng"])
        loop = checkpoint["loop"]
        self.episodes, self.best_eval, self.next_checkpoint = loop["episodes"], loop["best_eval"], loop["next_checkpoint"]
        self.recent_returns.extend(loop["recent_returns"])
        self.last_eval = tuple(loop["last_eval"]) if loop["last_eval"] else None
        self.start = time.perf_counter() - loop["elapsed_s"]
        self.last_checkpoint = (checkpoint["step"], str(self.run.checkpoint_path(checkpoint["step"])))
        return checkpoint["step"]

    # ------------------------------------------------------------------ every step

    def env_step(self, step: int, obs: np.ndarray, action) -> np.ndarray:
        """Act in the environment, store the transition, keep the episode books; return the next observation."""
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.observe(next_obs)
        ends_return = terminated or (truncated and not self.cfg.truncation_bootstraps)
        self.buffer.add(obs, action, reward, next_obs, ends_return)
        self.episode_return += float(reward)
        self.episode_length += 1
        if terminated or truncated:
            self.episode_done(step)
            self.env_rng_before_reset = env_rng_state(self.env)
            next_obs, _ = self.env.reset()
        return next_obs

    def episode_done(self, step: int) -> None:
        self.run.log_episode(step, self.episode_return, self.episode_length)
        self.recent_returns.append(self.episode_return)
        self.episodes += 1
        self.episode_return, self.episode_length = 0.0, 0
        self.progress.set_postfix(ret=f"{np.mean(self.recent_returns):.1f}", refresh=False)

    def check_finite(self, step: int, name: str, value: torch.Tensor) -> None:
        if not bool(torch.isfinite(value).all()):
            self.stop_diverged(step, f"{name} is {value.detach().flatten()[0].item()}")

    def check_states_finite(self, step: int) -> None:
        for name, component in self.components.items():
            if isinstance(component, nn.Module):
                for key, tensor in component.state_dict().items():
                    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                        self.stop_diverged(step, f"{name}.{key} holds NaN or infinite values")

    def stop_diverged(self, step: int, what: str):
        if self.last_checkpoint:
            good = f"the last good checkpoint is {self.last_checkpoint[1]} (step {self.last_checkpoint[0]})"
        else:
            good = "no checkpoint was written before it"
        (self.run.dir / "diverged.json").write_text(json.dumps(
            {"global_step": step, "reason": what, "last_good_checkpoint": self.last_checkpoint and self.last_checkpoint[1]}))
        self.progress.close()
        self.run.close()
        raise TrainingDiverged(f"training diverged at step {step}: {what}; stopped without saving it; {good}")

    def steps_per_second(self, step: int) -> float:
        return step / max(time.perf_counter() - self.start, 1e-9)

    def after_step(self, step: int) -> bool:
        self.progress.update(1)
        stop = False
        if step % 1000 == 0:
            self.check_states_finite(step)
            self.run.log_scalars(step, {"charts/SPS": self.steps_per_second(step)})
            rss = resident_memory_mib()
            if rss is not None:
                self.run.log_scalars(step, {"perf/rss_mib": rss, "perf/peak_rss_mib": peak_memory_mib()})
        if self.cfg.eval.every and step % self.cfg.eval.every == 0:
            stop = self.periodic_eval(step)
        if self.cfg.video.every and step % self.cfg.video.every == 0:
            self.record_video(step)
        if self.episodes_done():
            stop = True
        if self.env_rng_before_reset is not None:  # an episode ended in this step: a checkpoint may be taken
            if self.cfg.checkpoint_every and step >= self.next_checkpoint:
                self.check_states_finite(step)
                self.next_checkpoint = (step // self.cfg.checkpoint_every + 1) * self.cfg.checkpoint_every
                path = self.run.save_checkpoint(step, self.state(step))
                self.last_checkpoint = (step, str(path))
            self.env_rng_before_reset = None
        return stop

    def periodic_eval(self, step: int) -> bool:
        result = evaluate(self.policy.act, self.cfg.env_id, self.cfg.eval.episodes, self.cfg.eval.seed)
        self.run.log_eval(step, result)
        self.last_eval = (step, result)
        self.best_eval = max(self.best_eval if self.best_eval is not None else -np.inf, result["mean_return"])
        self.progress.write(f"step {step}: eval mean return {result['mean_return']:.1f} "
                            f"+- {result['std_return']:.1f} over {result['episodes']} episodes")
        for listener in self.run.eval_listeners:
            listener(step, result)
        target = self.cfg.eval.stop_at_return
        if target is not None and result["mean_return"] >= target:
            self.progress.write(f"step {step}: reached eval.stop_at_return = {target}, stopping")
            return True
        return False

    def record_video(self, step: int) -> None:
        """An evaluation video: videos/step_N.mp4 in the run folder, and a GIF of it in TensorBoard."""
        from spikerl.video.record import downscaled, gif_bytes, write_video

        v = self.cfg.video
        # The GIF keeps every k-th frame, downscaled, so that a long episode stays near 300 small frames in memory.
        limit = self.env.spec.max_episode_steps if self.env.spec and self.env.spec.max_episode_steps else 1000
        stride = max(1, -(-limit * v.episodes // 300))
        kept: list[np.ndarray] = []
        frame_numbers = itertools.count()

        def keep(frame: np.ndarray) -> None:
            if next(frame_numbers) % stride == 0:
                kept.append(downscaled(frame))

        info = write_video(self.policy, self.cfg.env_id, self.run.dir / "videos" / f"step_{step}.mp4", v.episodes,
                           self.cfg.eval.seed, v.raster, v.fps, on_frame=keep)
        self.run.log_gif(step, "eval/video", gif_bytes(kept, info["fps"] / stride), kept[0].shape)

    # ------------------------------------------------------------------ the end

    def finish(self, step: int, policy_state: dict, backends: dict[str, str]) -> dict:
        """Final evaluation over eval.final_episodes, final model and summary in the run folder.
        `backends`: the backend each network ran on (recorded in final_eval.json)."""
        self.env.close()
        self.check_states_finite(step)
        self.progress.close()
        wall = time.perf_counter() - self.start
        episodes = self.cfg.eval.final_episodes
        if self.last_eval and self.last_eval[0] == step and self.last_eval[1]["episodes"] == episodes:
            result = self.last_eval[1]  # the same policy on the same seeds: evaluating again would repeat it
        else:
            result = evaluate(self.policy.act, self.cfg.env_id, episodes, self.cfg.eval.seed)
            self.run.log_eval(step, result)
        best = max(self.best_eval if self.best_eval is not None else -np.inf, result["mean_return"])
        train_average = best_moving_average(self.run.training_returns())
        extra = {"global_step": step, "train_episodes": self.episodes, "wall_time_s": wall,
                 "steps_per_second": step / max(wall, 1e-9), "best_eval_mean_return": float(best),
                 "best_train_average": train_average and train_average[0],
                 "best_train_average_episode": train_average and train_average[1],
                 "device": str(self.device), "backends": backends, "run_dir": str(self.run.dir)}
        self.run.save_final(self.cfg, policy_state, result, extra)
        self.run.close()
        return {**result, **extra}
