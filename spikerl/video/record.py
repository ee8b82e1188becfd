"""Videos of deterministic evaluation episodes: the environment's `rgb_array` frames, each episode's
return written on them, optionally the spike panel beside them, encoded to MP4 by imageio's ffmpeg.

The episodes are `spikerl eval`'s: the same evaluation loop, episode i seeded `seed + i`, so a
video shows exactly the returns `spikerl eval` reports. One frame per environment step, showing the
state after the action, with the spikes of the decision that chose it.
"""

from __future__ import annotations

import functools
import io
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from spikerl.deploy.energy import SpikeRecorder
from spikerl.errors import SpikerlError
from spikerl.rl.envs import is_mujoco
from spikerl.rl.evaluate import EpisodeObserver, evaluate
from spikerl.video.raster import RasterPanel


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad to even height and width (H.264 with 4:2:0 chroma needs them)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def plain_mujoco_scene(env) -> None:
    """Turn off MuJoCo's shadows, reflections and skybox: on a software OpenGL (EGL or OSMesa through Mesa's
    llvmpipe, the usual headless case) they cost about three quarters of each frame."""
    import mujoco

    env.render()  # creates the renderer's scene
    flags = env.unwrapped.mujoco_renderer.viewer.scn.flags
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
        flags[flag] = 0


class FrameComposer(EpisodeObserver):
    """Collects one composed frame per environment step (environment, caption, spike panel) into `sink`."""

    def __init__(self, sink, episodes: int, tap: SpikeRecorder | None, panel_factory=None, plain: bool = False):
        self.sink, self.episodes, self.tap, self.plain = sink, episodes, tap, plain
        self.panel_factory = panel_factory
        self.panel: RasterPanel | None = None
        self.frames = 0
        self.lengths: list[int] = []

    def start(self, env, episode: int) -> None:
        self.lengths.append(0)
        if self.plain and episode == 0:
            plain_mujoco_scene(env)
        if self.panel is not None:
            self.panel.reset()

    def step(self, env, episode: int, action, episode_return: float) -> None:
        frame = np.asarray(env.render())
        if self.tap is not None:
            if self.panel is None:
                self.panel = self.panel_factory(env, frame.shape[0])
            self.panel.push([s.cpu().numpy() for s in self.tap.last], action)
            frame = np.concatenate([frame, self.panel.draw()], axis=1)
        image = Image.fromarray(frame)
        ImageDraw.Draw(image).text((6, 4), f"episode {episode + 1}/{self.episodes}   step {self.lengths[-1] + 1}   "
                                   f"return {episode_return:.1f}", fill=(0, 0, 0) if self.tap is None else (20, 20, 20),
                                   stroke_width=2, stroke_fill=(255, 255, 255))
        self.sink(_even(np.asarray(image)))
        self.lengths[-1] += 1
        self.frames += 1


def _panel_factory(net):
    """Makes the spike panel for `net` beside the frames of an environment, as tall as its frames."""
    from gymnasium import spaces

    sizes = [layer.out_features for layer in net.layers]

    def make(env, height: int) -> RasterPanel:
        space = env.action_space
        discrete = isinstance(space, spaces.Discrete)
        return RasterPanel(sizes, net.timesteps, height, discrete=discrete,
                           action_dims=1 if discrete else int(np.prod(space.shape)),
                           action_low=None if discrete else space.low, action_high=None if discrete else space.high)
    return make


def render_episodes(policy, env_id: str, episodes: int, seed: int, sink, raster: bool = False,
                    shadows: bool = False, env_kwargs: dict | None = None) -> tuple[dict, FrameComposer]:
    """Play `episodes` deterministic evaluation episodes of `policy`, handing each composed frame to `sink`
    (MuJoCo scenes without shadows and reflections unless `shadows`). Returns the evaluation result (as
    `spikerl eval` gives it) and the composer (frame counts, timing)."""
    from spikerl.snn.network import SpikingMLP

    tap = None
    if raster:
        if not isinstance(policy.net, SpikingMLP):
            raise SpikerlError("--raster shows the hidden spikes of a spiking network; this policy is an ANN")
        tap = SpikeRecorder(policy.net)
    factory = _panel_factory(policy.net) if raster else None
    composer = FrameComposer(sink, episodes, tap, factory, plain=is_mujoco(env_id) and not shadows)
    net = policy.net
    if tap is not None:
        policy.net = tap
    try:
        result = evaluate(policy.act, env_id, episodes, seed, observer=composer, render_mode="rgb_array",
                          env_kwargs=env_kwargs)
    finally:
        policy.net = net
    return result, composer


def prepare_rendering(env_id: str, env_kwargs: dict | None = None) -> float:
    """Fail early, in one line, where videos cannot be made (no encoder, an environment that draws no
    frames, no pygame for classic control, no OpenGL backend for MuJoCo): choose MuJoCo's backend before
    anything imports MuJoCo, then render one frame of the environment made with `env_kwargs`. Done once per
    environment and process (a failure is not remembered); returns the environment's own frame rate
    (`render_fps`, which env_kwargs such as a frame skip change; else 30)."""
    return _prepare_rendering(env_id, json.dumps(env_kwargs or {}, sort_keys=True))


@functools.cache
def _prepare_rendering(env_id: str, env_kwargs_json: str) -> float:
    import gymnasium as gym

    from spikerl.rl.envs import make_env

    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401  (imageio's ffmpeg plugin needs it)
    except ImportError:
        raise SpikerlError("videos need imageio with its ffmpeg plugin: pip install 'spikerl[video]'") from None
    if is_mujoco(env_id):
        from spikerl.video.gl import choose_mujoco_gl

        choose_mujoco_gl()
    env_kwargs = json.loads(env_kwargs_json)
    env = make_env(env_id, env_kwargs=env_kwargs)
    modes, fps = env.metadata.get("render_modes", []), env.metadata.get("render_fps")
    env.close()
    if "rgb_array" not in modes:
        raise SpikerlError(f"environment {env_id} draws no frames (its render modes: {', '.join(modes) or 'none'})")
    # Classic-control tasks draw with pygame: no window and no sound device needed for rgb_array frames.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    env = make_env(env_id, render_mode="rgb_array", env_kwargs=env_kwargs)
    try:
        env.reset(seed=0)
        env.render()
    except gym.error.DependencyNotInstalled as exc:
        raise SpikerlError(f"rendering {env_id} needs {exc}; pip install 'spikerl[video]'") from None
    finally:
        env.close()
    return float(fps) if fps else 30.0


def open_mp4(path: Path, fps: float):
    """An imageio writer of H.264 MP4 through the ffmpeg that imageio-ffmpeg ships."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    return imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=7,
                              macro_block_size=1, pixelformat="yuv420p", ffmpeg_log_level="error")


def write_video(policy, env_id: str, path: Path, episodes: int = 1, seed: int = 10_000, raster: bool = False,
                fps: float | None = None, on_frame=None, shadows: bool = False, env_kwargs: dict | None = None) -> dict:
    """Render deterministic evaluation episodes to an MP4 at `path` (each frame also to `on_frame`, if given);
    return what was made."""
    own_rate = prepare_rendering(env_id, env_kwargs)
    rate = float(fps) if fps else own_rate
    writer = open_mp4(path, rate)
    started = time.perf_counter()
    try:
        def sink(frame: np.ndarray) -> None:
            writer.append_data(frame)
            if on_frame is not None:
                on_frame(frame)

        result, composer = render_episodes(policy, env_id, episodes, seed, sink, raster, shadows, env_kwargs)
    finally:
        writer.close()
    wall = time.perf_counter() - started
    return {"path": str(path), "env_id": env_id, "episodes": episodes, "seed": seed, "frames": composer.frames,
            "episode_lengths": composer.lengths, "returns": result["returns"], "mean_return": result["mean_return"],
            "fps": rate, "bytes": path.stat().st_size, "wall_time_s": wall,
            "frames_per_second_made": composer.frames / max(wall, 1e-9), "raster": raster}


def downscaled(frame: np.ndarray, max_width: int = 480) -> np.ndarray:
    """`frame` shrunk to at most `max_width` pixels wide, aspect kept."""
    height, width = frame.shape[:2]
    if width <= max_width:
        return frame
    return np.asarray(Image.fromarray(frame).resize((max_width, round(height * max_width / width))))


def gif_bytes(frames: list[np.ndarray], fps: float) -> bytes:
    """An animated GIF of `frames`, as TensorBoard shows videos."""
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return buffer.getvalue()
