"""The run folder: resolved config, metrics (CSV and TensorBoard), checkpoints, final model and evaluation.

    RUN_DIR/
      config.yaml          the resolved config (train it again with `spikerl train RUN_DIR/config.yaml`)
      episodes.csv         global_step, episodic_return, episodic_length (training episodes)
      eval.csv             global_step, mean_return, std_return, min_return, max_return
      tb/                  TensorBoard events (charts/episodic_return, eval/mean_return, losses/...)
      checkpoints/         step_<N>.pt: everything needed to resume (see spikerl.rl.checkpoint)
      final_model.pt       the policy's weights and config
      final_eval.json      the final deterministic evaluation

A resumed run (`spikerl train --resume RUN_DIR`) cuts the CSV files back to the byte offsets its
checkpoint recorded and tells TensorBoard to hide later events, so no row is duplicated or missing.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

from spikerl.config import TrainConfig, config_to_dict, save_config
from spikerl.errors import CheckpointFormatError, SpikerlError
from spikerl.fileio import atomic_write_text
from spikerl.rl.checkpoint import load_checkpoint, write_checkpoint

EPISODE_FIELDS = ["global_step", "episodic_return", "episodic_length"]
EVAL_FIELDS = ["global_step", "mean_return", "std_return", "min_return", "max_return"]


def default_run_dir(cfg: TrainConfig, seeds: str | None = None) -> Path:
    env = cfg.env_id.replace("/", "_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env}-{cfg.algo}-{cfg.network.kind}-{seeds or f's{cfg.seed}'}-{stamp}"


class CsvLog:
    """An append-only CSV file, flushed per row, that can be cut back to an earlier byte offset."""

    def __init__(self, path: Path, fields: list[str], truncate_at: int | None = None):
        if truncate_at is not None:
            with path.open("r+b") as f:
                f.truncate(truncate_at)
        new = not path.exists() or path.stat().st_size == 0
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=fields)
        if new:
            self._writer.writeheader()
            self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._file.flush()  # a killed process loses no written row

    def offset(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class CheckpointStore:
    """A folder of checkpoints step_<N>.pt, the newest `keep` kept: a run's, or a population's (which holds
    every agent of it in each file)."""

    def __init__(self, directory: Path, keep: int):
        self.dir, self.keep = Path(directory), keep

    def checkpoints(self) -> list[Path]:
        """The checkpoints, newest first."""
        paths = [p for p in self.dir.glob("step_*.pt") if p.stem[5:].isdigit()]
        return sorted(paths, key=lambda p: int(p.stem[5:]), reverse=True)

    def check_free_space(self, checkpoint_bytes: int, checkpointing: bool) -> None:
        """Refuse to start when the checkpoints kept (plus one being written) cannot fit."""
        copies = self.keep + 1 if checkpointing else 1
        needed = checkpoint_bytes * copies
        self.dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.dir).free
        if free < needed:
            raise SpikerlError(f"{self.dir} has {free / 2**20:.0f} MiB free, but this run's checkpoints "
                               f"need about {needed / 2**20:.0f} MiB ({copies} x {checkpoint_bytes / 2**20:.0f} MiB, "
                               "mostly the replay buffer); free space, or lower keep_checkpoints or the buffer size")

    def path(self, step: int) -> Path:
        return self.dir / f"step_{step}.pt"

    def save(self, step: int, state: dict) -> Path:
        """Write step_<step>.pt completely, then drop checkpoints beyond `keep`, oldest first."""
        path = self.path(step)
        previous = self.checkpoints()
        try:
            write_checkpoint({"step": step, **state}, path)
        except OSError as exc:
            kept = f"; the previous checkpoint {previous[0]} is intact" if previous else ""
            raise SpikerlError(f"could not write checkpoint {path}: {exc.strerror or exc}{kept}") from None
        for old in self.checkpoints()[self.keep:]:
            old.unlink()
        return path

    def latest_good(self, owner: Path) -> dict | None:
        """The newest checkpoint that loads and verifies; corrupt newer ones are set aside with a message.
        A sound checkpoint of another format version stops the resume (and is left where it is)."""
        for stale in self.dir.glob(".step_*.pt.tmp-*"):
            stale.unlink()  # a write the killed process never finished
        candidates = self.checkpoints()
        for path in candidates:
            try:
                data = load_checkpoint(path)
            except CheckpointFormatError:
                raise
            except SpikerlError as exc:
                aside = path.with_name(path.name + ".corrupt")
                path.replace(aside)
                print(f"spikerl: {exc}; moved it to {aside.name} and falling back to the previous checkpoint",
                      file=sys.stderr)
                continue
            print(f"spikerl: resuming {owner} from {path.name} (step {data['step']})", file=sys.stderr)
            return data
        if candidates:
            raise SpikerlError(f"no usable checkpoint in {self.dir}: all {len(candidates)} are corrupt")
        return None


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise SpikerlError(f"cannot write to run folder {directory}: {exc.strerror}") from None


def _lock_run_folder(directory: Path):
    """Hold RUN_DIR/.lock while training, so a second process (say, an early --resume) cannot write too.

    The kernel drops the lock when the process ends, however it ends, so a killed run never leaves
    a stale lock behind.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no protection, as before
        return None
    handle = (directory / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise SpikerlError(f"run folder {directory} is in use by {owner}; wait for it to stop, or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"spikerl process {os.getpid()}")
    handle.flush()
    return handle


def run_finished(run_dir: Path) -> bool:
    """A run is finished once its final evaluation is written (last of all, after the final model)."""
    return (run_dir / "final_eval.json").is_file() and (run_dir / "final_model.pt").is_file()


class Run:
    """Owns a run folder for one training run, new or resumed."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False):
        self.cfg = cfg
        self.dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        self.store = CheckpointStore(self.dir / "checkpoints", cfg.keep_checkpoints)  # a population of one's
        if resume:
            if not (self.dir / "config.yaml").is_file():
                raise SpikerlError(f"cannot resume {self.dir}: not a spikerl run folder (no config.yaml)")
        elif self.dir.exists() and any(self.dir.iterdir()):
            raise SpikerlError(f"run folder {self.dir} already exists and is not empty; choose another run_dir "
                               f"or continue it with `spikerl train --resume {self.dir}`")
        _check_writable(self.dir)
        self._lock = _lock_run_folder(self.dir)
        save_config(cfg, self.dir / "config.yaml")
        self.episodes = self.evals = self.tb = None
        # Called as listener(step, result) after every periodic evaluation; a tuner reports to its
        # pruner here, and may raise to stop the run (the caller then closes it).
        self.eval_listeners: list = []

    def latest_good_checkpoint(self) -> dict | None:
        return self.store.latest_good(self.dir)

    def finished(self) -> bool:
        return run_finished(self.dir)

    def open_logs(self, resumed_from: dict | None = None) -> None:
        """Open the metric logs; when resuming, first cut them back to what the checkpoint had seen."""
        offsets = resumed_from["logs"] if resumed_from else {}
        if resumed_from is None and (self.dir / "episodes.csv").exists():
            # A resume with no checkpoint starts over: the logs from nothing, TensorBoard's events too.
            offsets = {"episodes.csv": 0, "eval.csv": 0}
            shutil.rmtree(self.dir / "tb", ignore_errors=True)
        self.episodes = CsvLog(self.dir / "episodes.csv", EPISODE_FIELDS, offsets.get("episodes.csv"))
        self.evals = CsvLog(self.dir / "eval.csv", EVAL_FIELDS, offsets.get("eval.csv"))
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

        # purge_step hides events a killed process logged after the checkpoint it is resumed from.
        purge_step = resumed_from["step"] + 1 if resumed_from else None
        self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=purge_step)
        if resumed_from is None:
            self.tb.add_text("config", "```\n" + json.dumps(config_to_dict(self.cfg), indent=2) + "\n```")

    def log_offsets(self) -> dict[str, int]:
        return {"episodes.csv": self.episodes.offset(), "eval.csv": self.evals.offset()}

    def log_episode(self, step: int, episodic_return: float, length: int) -> None:
        self.episodes.write({"global_step": step, "episodic_return": episodic_return, "episodic_length": length})
        self.tb.add_scalar("charts/episodic_return", episodic_return, step)
        self.tb.add_scalar("charts/episodic_length", length, step)

    def training_returns(self) -> list[float]:
        """Every training episode's return so far, from episodes.csv (flushed per row)."""
        with (self.dir / "episodes.csv").open(newline="") as f:
            return [float(row["episodic_return"]) for row in csv.DictReader(f)]

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.tb.add_scalar(tag, value, step)

    def log_gif(self, step: int, tag: str, gif: bytes, shape: tuple[int, ...]) -> None:
        """An animated GIF as TensorBoard shows videos (an image summary; its Images tab plays it)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(height=shape[0], width=shape[1], colorspace=3, encoded_image_string=gif)
        self.tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def log_eval(self, step: int, result: dict) -> None:
        self.evals.write({"global_step": step, **{k: result[k] for k in EVAL_FIELDS[1:]}})
        self.tb.add_scalar("eval/mean_return", result["mean_return"], step)

    def save_final(self, cfg: TrainConfig, policy_state: dict, result: dict, extra: dict) -> None:
        write_checkpoint({"config": config_to_dict(cfg), "policy": policy_state}, self.dir / "final_model.pt")
        # Written last: its presence marks the run as finished.
        atomic_write_text(self.dir / "final_eval.json", json.dumps({**result, **extra}, indent=2))

    def close(self) -> None:
        for log in (self.episodes, self.evals, self.tb):
            if log is not None:
                log.close()
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None
