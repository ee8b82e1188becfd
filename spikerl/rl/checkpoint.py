"""Checkpoint files (atomic writes, a format version, a SHA-256 checksum) and the random-number state they hold.

A file is one header line and a `torch.save` payload:

    SPIKERL-CHECKPOINT {"format": 3, "bytes": <payload size>, "sha256": "<hex digest of the payload>"}\n
    <payload>

It is written to a temporary file in the same folder, flushed to disk, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one. Reading checks
the size (a truncated copy) and the digest (any flipped byte) before unpickling, with
`weights_only=True`. Read them with `load_checkpoint`; plain `torch.load` does not know the header.
A file of another format version is sound but unreadable here: that is `CheckpointFormatError`
(naming both versions), never mistaken for corruption. Tensors load onto the CPU; loading a state
into networks on another device moves them there (train on CUDA, evaluate on the CPU).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from spikerl.errors import CheckpointFormatError, SpikerlError
from spikerl.fileio import atomic_write_bytes

# 3: networks built from spiking layers (state keys neurons.N.membrane.*, decoder.readout.*), CUDA generators.
# 4: populations: every agent stacked along a leading dimension, per-agent generators, mid-episode replays.
# 5: several environments per agent (PPO), each with its own episode replay; format 4 still reads.
CHECKPOINT_FORMAT = 5
READABLE_FORMATS = (4, 5)
MAGIC = b"SPIKERL-CHECKPOINT "


def write_checkpoint(obj: dict, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **obj}, buffer)
    payload = buffer.getbuffer()
    header = {"format": CHECKPOINT_FORMAT, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    atomic_write_bytes(path, MAGIC + json.dumps(header).encode() + b"\n", payload)


def load_checkpoint(path: Path) -> dict:
    """Read and verify a checkpoint or final model; every problem is one SpikerlError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SpikerlError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise SpikerlError(f"checkpoint {path} is corrupt or not a spikerl checkpoint (no spikerl header)")
    newline = data.find(b"\n")
    try:
        header = json.loads(data[len(MAGIC):newline])
        size, digest, version = int(header["bytes"]), str(header["sha256"]), int(header["format"])
    except (ValueError, KeyError, TypeError):
        raise SpikerlError(f"checkpoint {path} is corrupt (unreadable header)") from None
    payload = memoryview(data)[newline + 1:]
    if len(payload) != size:
        raise SpikerlError(f"checkpoint {path} is corrupt: truncated ({len(payload)} of {size} bytes)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise SpikerlError(f"checkpoint {path} is corrupt: its SHA-256 checksum does not match")
    if version not in READABLE_FORMATS:
        which = "an older" if version < CHECKPOINT_FORMAT else "a newer"
        raise CheckpointFormatError(f"checkpoint {path} has format {version}, written by {which} spikerl; this "
                                    f"spikerl reads formats {', '.join(map(str, READABLE_FORMATS))} (the file is intact: use the spikerl "
                                    "that wrote it, or train the run again)")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # a payload that passed the checksum but was written wrong
        raise SpikerlError(f"checkpoint {path} is corrupt ({type(exc).__name__} while unpickling)") from None


# ----------------------------------------------------------------------------- environment generators


def env_rng_state(env) -> dict:
    return {"env": env.unwrapped.np_random.bit_generator.state, "action_space": env.action_space.np_random.bit_generator.state}


def restore_env_rng_state(env, state: dict) -> None:
    env.unwrapped.np_random.bit_generator.state = state["env"]
    env.action_space.np_random.bit_generator.state = state["action_space"]
