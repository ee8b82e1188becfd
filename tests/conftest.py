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
