"""The run folder: resolved config, metrics (CSV and TensorBoard), checkpoints, final model and evaluation.

    RUN_DIR/
      config.yaml          the resolved config (train it again with `spikerl train RUN_DIR/config.yaml`)
      episodes.csv         global_step, episodic_return, episodic_length (training episodes)
      eval.csv             global_step, mean_return, std_return, min_return, max_return
      tb/                  TensorBoard events (charts/episodic_return, eval/mean_return, losses/...)
      checkpoints/         step_<N>.pt: networks and optimizers, written every checkpoint_every steps
      final_model.pt       the policy's weights and config
      final_eval.json      the final deterministic evaluation
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import torch

from spikerl.config import TrainConfig, config_to_dict, save_config
from spikerl.errors import SpikerlError

CHECKPOINT_FORMAT = 1


def default_run_dir(cfg: TrainConfig) -> Path:
    env = cfg.env_id.replace("/", "_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env}-{cfg.algo}-{cfg.network.kind}-s{cfg.seed}-{stamp}"


class CsvLog:
    def __init__(self, path: Path, fields: list[str]):
        new = not path.exists()
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=fields)
        if new:
            self._writer.writeheader()

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Run:
    """Owns a run folder for one training run."""

    def __init__(self, cfg: TrainConfig):
        self.dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        if self.dir.exists() and any(self.dir.iterdir()):
            raise SpikerlError(f"run folder {self.dir} already exists and is not empty; choose another run_dir")
        try:
            (self.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise SpikerlError(f"cannot write to run folder {self.dir}: {exc.strerror}") from None
        save_config(cfg, self.dir / "config.yaml")
        self.episodes = CsvLog(self.dir / "episodes.csv", ["global_step", "episodic_return", "episodic_length"])
        self.evals = CsvLog(self.dir / "eval.csv", ["global_step", "mean_return", "std_return", "min_return", "max_return"])
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

        self.tb = SummaryWriter(str(self.dir / "tb"))
        self.tb.add_text("config", "```\n" + json.dumps(config_to_dict(cfg), indent=2) + "\n```")

    def log_episode(self, step: int, episodic_return: float, length: int) -> None:
        self.episodes.write({"global_step": step, "episodic_return": episodic_return, "episodic_length": length})
        self.tb.add_scalar("charts/episodic_return", episodic_return, step)
        self.tb.add_scalar("charts/episodic_length", length, step)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.tb.add_scalar(tag, value, step)

    def log_eval(self, step: int, result: dict) -> None:
        self.evals.write({"global_step": step, **{k: result[k] for k in ("mean_return", "std_return", "min_return", "max_return")}})
        self.tb.add_scalar("eval/mean_return", result["mean_return"], step)

    def save_checkpoint(self, step: int, state: dict) -> Path:
        path = self.dir / "checkpoints" / f"step_{step}.pt"
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "step": step, **state}, path)
        return path

    def save_final(self, cfg: TrainConfig, policy_state: dict, result: dict, extra: dict) -> None:
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "config": config_to_dict(cfg), "policy": policy_state},
                          self.dir / "final_model.pt")
        (self.dir / "final_eval.json").write_text(json.dumps({**result, **extra}, indent=2))

    def close(self) -> None:
        self.episodes.close()
        self.evals.close()
        self.tb.close()


def atomic_torch_save(obj: dict, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename, so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise SpikerlError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise SpikerlError(f"checkpoint {path} is corrupt or not a spikerl checkpoint ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise SpikerlError(f"checkpoint {path} is not a spikerl checkpoint of format {CHECKPOINT_FORMAT}")
    return data
