import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `spikerl ARGS` in a child process, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "spikerl.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def newest_checkpoint(run_dir: Path) -> dict:
    """The newest checkpoint of a run folder, read and verified as spikerl reads it."""
    from spikerl.rl.checkpoint import load_checkpoint

    paths = sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
    assert paths, f"no checkpoint in {run_dir}"
    return load_checkpoint(paths[-1])


def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every point a run logged under `tag`, as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def assert_policy_commands_read(cli, run_dir: Path, tmp_path: Path) -> None:
    """`spikerl eval` gives the run's final evaluation; its NIR export evaluates to the same returns; `eval
    --quantize` and `energy` run on it."""
    import json

    final = json.loads((run_dir / "final_eval.json").read_text())
    assert cli("eval", str(run_dir), "--episodes", "3", "-o", str(tmp_path / "e.json")).returncode == 0
    assert json.loads((tmp_path / "e.json").read_text())["returns"] == final["returns"]
    exported = cli("export", str(run_dir), "-o", str(tmp_path / "policy.nir"))
    assert exported.returncode == 0, exported.stderr
    from_nir = cli("eval", str(tmp_path / "policy.nir"), "--episodes", "3", "-o", str(tmp_path / "n.json"))
    assert from_nir.returncode == 0, from_nir.stderr
    assert json.loads((tmp_path / "n.json").read_text())["returns"] == pytest.approx(final["returns"], abs=1e-3)
    quantized = cli("eval", str(run_dir), "--quantize", "--weight-bits", "16", "--episodes", "3", "-o", str(tmp_path / "q.json"))
    assert quantized.returncode == 0, quantized.stderr
    energy = cli("energy", str(run_dir))
    assert energy.returncode == 0 and "spikes per decision" in energy.stdout, energy.stderr
