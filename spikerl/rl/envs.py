"""Gymnasium environments: checked creation with clear errors, and a small continuous task for tests."""

from __future__ import annotations

import difflib
import functools
import json
import os
import warnings
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from spikerl.errors import SpikerlError

if TYPE_CHECKING:
    from spikerl.config import TrainConfig


class PointReachEnv(gym.Env):
    """Move a point in the plane to the origin. obs = position in [-1, 1]^2, action = velocity in [-1, 1]^2.

    x' = clip(x + 0.2 a, -1, 1), reward = -|x'|; 40 steps per episode (truncation). Standing still
    scores about -24 per episode, the best policy (a = clip(-5 x)) about -0.7. TD3 learns it in a few
    thousand steps, which makes it the continuous-control task of the test suite.
    """

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-1.0, 1.0, size=2).astype(np.float32)
        return self._pos.copy(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self._pos = np.clip(self._pos + 0.2 * action, -1.0, 1.0).astype(np.float32)
        reward = -float(np.linalg.norm(self._pos))
        return self._pos.copy(), reward, False, False, {}


if "spikerl/PointReach-v0" not in gym.registry:
    gym.register("spikerl/PointReach-v0", entry_point=PointReachEnv, max_episode_steps=40)


def make_env(env_id: str, algo: str | None = None, render_mode: str | None = None,
             env_kwargs: dict | None = None) -> gym.Env:
    """gym.make(env_id, **env_kwargs) with one-line errors: unknown id, an argument the environment does not
    take, missing extra, or an action space the algorithm can't drive."""
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SpikerlError(f"unknown environment {env_id!r}{hint}")
    if is_mujoco(env_id):
        _route_mujoco_warnings()
    try:
        with warnings.catch_warnings():
            # An older version is asked for on purpose (the paper's CartPole-v0): no advice to upgrade.
            warnings.filterwarnings("ignore", message=".*is out of date", category=DeprecationWarning)
            options = {**(env_kwargs or {}), **({"render_mode": render_mode} if render_mode else {})}
            env = gym.make(env_id, **options)
    except gym.error.DependencyNotInstalled as exc:
        raise SpikerlError(f"environment {env_id} needs an optional dependency: {exc} "
                           "(for MuJoCo: pip install 'spikerl[mujoco]'; to render: 'spikerl[video]')") from None
    except (gym.error.Error, ImportError) as exc:
        raise SpikerlError(f"cannot create environment {env_id}: {exc}") from None
    except Exception as exc:
        if not env_kwargs:
            raise
        raise refused_env_kwargs(env_id, env_kwargs, exc) from None
    if render_mode and is_mujoco(env_id) and not CAMERA_KWARGS & set(env_kwargs or {}):
        _film_with_tracking_camera(env)  # unless the config chose its own view
    if not (isinstance(env.observation_space, spaces.Box) and len(env.observation_space.shape) == 1):
        env.close()
        raise SpikerlError(f"environment {env_id} has observation space {env.observation_space}; spikerl needs a flat Box")
    if algo == "dqn" and not isinstance(env.action_space, spaces.Discrete):
        env.close()
        raise SpikerlError(f"environment {env_id} has continuous actions ({env.action_space}); DQN needs discrete actions, use algo=td3")
    if algo == "ppo" and not isinstance(env.action_space, (spaces.Box, spaces.Discrete)):
        env.close()
        raise SpikerlError(f"environment {env_id} has action space {env.action_space}; PPO drives Discrete or Box actions")
    if algo in ("td3", "sac") and not isinstance(env.action_space, spaces.Box):
        env.close()
        raise SpikerlError(f"environment {env_id} has discrete actions ({env.action_space}); {algo.upper()} needs "
                           "continuous actions, use algo=dqn")
    return env


def env_kwargs_for(env_id: str, trained_env_id: str | None, trained_env_kwargs: dict | None) -> dict:
    """What to make `env_id` with for a policy trained in `trained_env_id`: the run's env_kwargs in its own
    environment, none in another one (--env), whose constructor need not take them."""
    return dict(trained_env_kwargs or {}) if env_id == trained_env_id else {}


def refused_env_kwargs(env_id: str, env_kwargs: dict, exc: Exception) -> SpikerlError:
    """One line for an environment that fails with the run's env_kwargs (a keyword it does not take, a value
    it cannot use)."""
    reason = str(exc).partition(" was raised from the environment creator")[0]  # Gymnasium repeats the kwargs
    lines = reason.strip().splitlines()
    return SpikerlError(f"environment {env_id} refused env_kwargs {env_kwargs}: "
                        f"{type(exc).__name__}: {lines[0] if lines else ''}")


def check_settings_fit(cfg: TrainConfig, action_space: gym.Space) -> None:
    """Refuse, in one line, settings that the environment's action space rules out."""
    if cfg.algo == "ppo" and isinstance(action_space, spaces.Discrete):
        log_std_settings = [name for name, used in (("log_std_learning_rate", cfg.ppo.log_std_learning_rate is not None),
                                                    ("log_std_after_stop", cfg.ppo.log_std_after_stop)) if used]
        if log_std_settings:
            raise SpikerlError(f"ppo.{log_std_settings[0]} is for continuous actions; {cfg.env_id} has discrete "
                               "actions (a categorical policy has no log-std)")


@functools.cache
def _action_space(env_id: str, algo: str, env_kwargs_json: str) -> gym.Space:
    """The action space of `env_id` as `algo` would get it (made once per process: sweeps ask per cell). With
    env_kwargs the environment also resets and takes a step, so that a value it can build with but not run
    with (a string for a number, say) is refused now, not mid-run."""
    env_kwargs = json.loads(env_kwargs_json)
    env = make_env(env_id, algo, env_kwargs=env_kwargs)
    try:
        if env_kwargs:
            env.reset(seed=0)
            env.step(env.action_space.sample())
    except Exception as exc:
        raise refused_env_kwargs(env_id, env_kwargs, exc) from None
    finally:
        env.close()
    return env.action_space


def check_environment(cfg: TrainConfig) -> None:
    """Refuse, in one line and before anything is written, an environment that the config's algorithm or
    settings cannot use."""
    check_settings_fit(cfg, _action_space(cfg.env_id, cfg.algo, json.dumps(cfg.env_kwargs, sort_keys=True)))


def is_mujoco(env_id: str) -> bool:
    """Whether `env_id` is one of Gymnasium's MuJoCo tasks (rendering them needs an OpenGL backend)."""
    spec = gym.registry.get(env_id)
    entry = spec.entry_point if spec is not None else None
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


# MuJoCo 3.3+ deprecates an attribute that Gymnasium's own half_cheetah.xml uses. The warning is about
# Gymnasium's file, not the user's run, and MuJoCo printed it at every HalfCheetah made (so a refused
# HalfCheetah sweep was three lines of stderr, not one). The handler is process-wide: a model of the
# user's own that sets settotalmass is not warned either.
_GYMNASIUM_ASSET_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


@functools.cache
def _route_mujoco_warnings() -> None:
    """Write MuJoCo's warnings to stderr as MuJoCo does, except those about Gymnasium's own assets."""
    try:
        import mujoco
    except ImportError:  # gym.make says which extra is missing
        return

    def warn(message: str) -> None:
        # MuJoCo calls this from C: an exception escaping it aborts the process (a closed pipe, say), so a
        # warning that cannot be written is dropped, as MuJoCo's own handler drops it.
        if message.startswith(_GYMNASIUM_ASSET_WARNINGS):
            return
        try:
            os.write(2, f"WARNING: {message}\n".encode())
        except BaseException:
            pass

    mujoco.set_mju_user_warning(warn)


CAMERA_KWARGS = {"camera_id", "camera_name", "default_camera_config"}  # Gymnasium's MuJoCo view arguments


def _film_with_tracking_camera(env: gym.Env) -> None:
    """Render through the model's "track" camera where it has one (the locomotion tasks), which follows
    the body; some tasks' default view stays put while the robot runs out of it."""
    import mujoco

    camera = mujoco.mj_name2id(env.unwrapped.model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
    if camera >= 0:
        env.unwrapped.mujoco_renderer.camera_id = camera
