"""Videos: MP4s of evaluation episodes, the spike panel beside them, OpenGL for MuJoCo, videos while training."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from spikerl.config import load_config
from spikerl.rl import dqn, train_run
from spikerl.rl.evaluate import evaluate
from spikerl.snn.network import SpikingMLP
from spikerl.video.gl import renders_with
from spikerl.video.raster import RasterPanel
from spikerl.video.record import render_episodes, write_video
from tests.conftest import ROOT

imageio = pytest.importorskip("imageio.v2")
pytest.importorskip("imageio_ffmpeg")
pytest.importorskip("pygame")


def small_spiking_q_policy(timesteps: int = 4):
    """An untrained spiking Q-network small enough that the panel draws one pixel row per neuron."""
    cfg = load_config(ROOT / "configs" / "cartpole_dqn_snn.yaml",
                      ["env_id=CartPole-v1", "network.hidden=[12, 10]", f"network.timesteps={timesteps}"])
    env = gym.make("CartPole-v1")
    torch.manual_seed(3)
    policy = dqn.make_policy(cfg, env)
    env.close()
    return policy


def test_cartpole_episode_to_mp4_one_frame_per_step(tmp_path):
    policy = small_spiking_q_policy()
    path = tmp_path / "policy.mp4"
    info = write_video(policy, "CartPole-v1", path, episodes=2, seed=10_000)
    expected = evaluate(policy.act, "CartPole-v1", 2, 10_000)
    assert info["returns"] == expected["returns"]  # the same episodes as `spikerl eval`
    assert info["episode_lengths"] == [int(r) for r in expected["returns"]]  # CartPole: reward 1 per step
    reader = imageio.get_reader(path)
    frames = [frame for frame in reader]
    reader.close()
    assert len(frames) == info["frames"] == sum(info["episode_lengths"])
    assert frames[0].shape == (400, 600, 3) and frames[0].std() > 0  # CartPole's frame, something drawn


def test_raster_panel_shows_the_networks_spikes_for_each_decision():
    policy = small_spiking_q_policy(timesteps=4)
    frames = []
    result, composer = render_episodes(policy, "CartPole-v1", 1, 10_001, frames.append, raster=True)
    panel = composer.panel
    assert panel.pool == 1  # one pixel row per neuron: every neuron is checked below
    env_width = 600

    # The same episode again, the network's spikes computed here, independently of the panel.
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=10_001)
    decisions = []
    with torch.no_grad():
        for _ in range(len(frames)):
            x = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
            q, spikes = policy.net.forward_with_spikes(policy.obs_norm(x))
            decisions.append([s[:, 0].numpy() for s in spikes])
            obs, *_ = env.step(int(q.argmax()))
    env.close()
    assert sum(s.sum() for d in decisions for s in d) > 0  # the network does spike: the check is not vacuous

    for k in (0, len(frames) // 2, len(frames) - 1):
        frame = frames[k][:, env_width:]
        for layer, spikes in enumerate(decisions[k]):
            for step in range(spikes.shape[0]):
                for neuron in range(spikes.shape[1]):
                    y, x = panel.current_pixel(layer, neuron, step)
                    assert (frame[y, x, 0] > 128) == bool(spikes[step, neuron]), (k, layer, step, neuron)
        for ago in range(min(k + 1, 5)):
            for layer, spikes in enumerate(decisions[k - ago]):
                for neuron, count in enumerate(spikes.sum(axis=0)):
                    y, x = panel.history_pixel(layer, neuron, ago)
                    assert abs(int(frame[y, x, 0]) - panel.spike_level(count)) <= 1, (k, ago, layer, neuron)


def test_raster_panel_pools_large_layers_by_their_most_active_neuron():
    panel = RasterPanel([400, 300], timesteps=5, height=200)
    assert panel.pool > 1 and sum(panel.rows) * panel.row_height <= 200
    spikes = [np.zeros((5, 400)), np.zeros((5, 300))]
    spikes[0][2, 399] = 1  # one spike, in the last group of layer 1
    panel.push(spikes, 1)
    image = panel.draw()
    y, x = panel.current_pixel(0, 399, 2)
    assert image[y, x, 0] == 255
    y, x = panel.current_pixel(0, 0, 2)
    assert image[y, x, 0] < 128


def test_spikerl_video_command_on_a_run(cli, tmp_path):
    run_dir = tmp_path / "run"
    trained = cli("train", "configs/cartpole_dqn_snn.yaml", "env_id=CartPole-v1", "total_steps=300", "eval.every=0",
                  "eval.final_episodes=1", "network.hidden=[16, 16]", f"run_dir={run_dir}", "progress=false")
    assert trained.returncode == 0, trained.stderr
    result = cli("video", str(run_dir), "--raster", "--episodes", "1")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "policy.mp4").stat().st_size > 0
    evaluated = json.loads((run_dir / "final_eval.json").read_text())
    assert f"returns {evaluated['returns'][0]:.1f}" in result.stdout  # the final evaluation's first episode


def test_an_ann_policy_has_no_raster(cli, tmp_path):
    run_dir = tmp_path / "run"
    trained = cli("train", "configs/cartpole_dqn_ann.yaml", "total_steps=50", "eval.every=0", "eval.final_episodes=1",
                  f"run_dir={run_dir}", "progress=false")
    assert trained.returncode == 0, trained.stderr
    result = cli("video", str(run_dir), "--raster")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "spikerl: error: --raster shows the hidden spikes of a spiking network; this policy is an ANN"]


def test_videos_while_training_go_to_the_run_folder_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from spikerl.rl.run import Run

    cfg = load_config(ROOT / "configs" / "cartpole_dqn_snn.yaml", [
        "total_steps=400", "eval.every=0", "eval.final_episodes=1", "network.hidden=[16, 16]", "video.every=200",
        "video.raster=true", f"run_dir={tmp_path / 'run'}", "progress=false"])
    train_run(cfg, Run(cfg))
    assert sorted(p.name for p in (tmp_path / "run" / "videos").iterdir()) == ["step_200.mp4", "step_400.mp4"]
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0})
    events.Reload()
    gifs = events.Images("eval/video")
    assert [g.step for g in gifs] == [200, 400] and gifs[0].encoded_image_string[:6] == b"GIF89a"


def test_videos_while_training_leave_the_training_unchanged(tmp_path):
    from spikerl.rl.checkpoint import load_checkpoint
    from spikerl.rl.run import Run

    finals = []
    for name, video in (("plain", []), ("filmed", ["video.every=300", "video.raster=true"])):
        cfg = load_config(ROOT / "configs" / "cartpole_dqn_snn.yaml", [
            "total_steps=900", "dqn.learning_starts=100", "eval.every=300", "eval.episodes=2", "eval.final_episodes=2",
            "network.hidden=[16, 16]", f"run_dir={tmp_path / name}", "progress=false", *video])
        train_run(cfg, Run(cfg))
        finals.append(load_checkpoint(tmp_path / name / "final_model.pt")["policy"])
    assert (tmp_path / "filmed" / "videos" / "step_900.mp4").is_file()
    assert (tmp_path / "plain" / "episodes.csv").read_text() == (tmp_path / "filmed" / "episodes.csv").read_text()
    assert (tmp_path / "plain" / "eval.csv").read_text() == (tmp_path / "filmed" / "eval.csv").read_text()
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def _mujoco_available() -> bool:
    try:
        import mujoco  # noqa: F401
    except ImportError:
        return False
    return True


def test_no_opengl_backend_is_one_clear_error():
    if not _mujoco_available():
        pytest.skip("MuJoCo is not installed")
    code = ("from spikerl.errors import SpikerlError\nfrom spikerl.video.gl import choose_mujoco_gl\n"
            "try:\n    choose_mujoco_gl(('no-such-gl',))\nexcept SpikerlError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.stdout.startswith("no OpenGL backend for MuJoCo renders on this machine (tried no-such-gl)")


@pytest.fixture(scope="module")
def halfcheetah_run(tmp_path_factory):
    if not _mujoco_available():
        pytest.skip("MuJoCo is not installed")
    from tests.conftest import run_cli

    run_dir = tmp_path_factory.mktemp("cheetah") / "run"
    result = run_cli("train", "configs/halfcheetah_td3_snn.yaml", "total_steps=60", "td3.learning_starts=30",
                     "td3.batch_size=8", "network.hidden=[16, 16]", "td3.critic.hidden=[16, 16]", "eval.every=0",
                     "eval.final_episodes=1", f"run_dir={run_dir}", "progress=false")
    assert result.returncode == 0, result.stderr
    return run_dir


def test_a_mujoco_run_without_a_working_opengl_backend_is_one_line(halfcheetah_run, tmp_path):
    env = {**os.environ, "MUJOCO_GL": "no-such-gl", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "spikerl.cli", "video", str(halfcheetah_run), "-o",
                             str(tmp_path / "v.mp4")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["spikerl: error: MUJOCO_GL=no-such-gl cannot render on this machine; "
                                                  "install its libraries or unset MUJOCO_GL to let spikerl choose"]
    assert not (tmp_path / "v.mp4").exists()


def test_a_mujoco_run_on_a_machine_without_opengl_is_one_line(halfcheetah_run, tmp_path):
    if renders_with("osmesa"):
        pytest.skip("OSMesa renders here: hiding EGL leaves a working backend")
    # No EGL vendor library: what a machine without an EGL driver looks like to libglvnd.
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    env["__EGL_VENDOR_LIBRARY_FILENAMES"] = str(tmp_path / "no-vendor.json")
    result = subprocess.run([sys.executable, "-m", "spikerl.cli", "video", str(halfcheetah_run), "-o",
                             str(tmp_path / "v.mp4")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "spikerl: error: no OpenGL backend for MuJoCo renders on this machine (tried EGL, OSMesa); install one: "
        "apt install libegl1 (EGL) or apt install libosmesa6 (OSMesa)"]


def test_a_mujoco_video_through_egl(halfcheetah_run, tmp_path):
    if not renders_with("egl"):
        pytest.skip("EGL does not render on this machine")
    env = {**os.environ, "MUJOCO_GL": "egl"}
    result = subprocess.run([sys.executable, "-m", "spikerl.cli", "video", str(halfcheetah_run), "--raster", "-o",
                             str(tmp_path / "v.mp4")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    reader = imageio.get_reader(tmp_path / "v.mp4")
    assert sum(1 for _ in reader) == 1000  # HalfCheetah's episode: 1000 steps, one frame each
    reader.close()


def test_mujoco_videos_follow_the_body_unless_the_config_chooses_a_camera():
    pytest.importorskip("mujoco")
    from spikerl.rl.envs import make_env

    tracking = make_env("HalfCheetah-v5", "td3", render_mode="rgb_array")
    chosen = make_env("HalfCheetah-v5", "td3", render_mode="rgb_array", env_kwargs={"camera_id": -1})
    try:
        assert tracking.unwrapped.mujoco_renderer.camera_id >= 0  # the model's "track" camera
        assert chosen.unwrapped.mujoco_renderer.camera_id == -1  # the free camera it asked for, kept
    finally:
        tracking.close(), chosen.close()
