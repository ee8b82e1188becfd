"""The `device` setting: auto | cpu | cuda | cuda:N, checked against this machine before anything runs."""

from __future__ import annotations

import torch

from spikerl.config import DEVICE_PATTERN
from spikerl.errors import SpikerlError


def resolve_device(name: str) -> torch.device:
    """The torch device for a config's `device`: auto is CUDA where available, else the CPU."""
    if not DEVICE_PATTERN.match(name):
        raise SpikerlError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpikerlError(f"device {name} asked for, but this machine has no usable CUDA device "
                               f"(PyTorch {torch.__version__}); use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpikerlError(f"device {name} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                               "device(s)")
    return device
