"""The compute device a user asked for, checked before any work starts.

Two steps, one rule each: :func:`parse_device` checks the spelling (torch-free, so the CLI
refuses ``--device cpu:1`` before it loads anything); :func:`resolve_device` checks the name
against the machine the work runs on (this one, or a Slurm node) and turns ``auto`` into the
best device there.
"""

from __future__ import annotations

import re

from sertool.errors import SertoolError

AUTO = "auto"  # the default of every command: cuda if the machine has a GPU, else cpu
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_SPELLING = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


class DeviceError(SertoolError, ValueError):
    """A device that is not a device name, or does not exist on this machine."""


def parse_device(device: str | None) -> str:
    """``None`` or ``auto`` -> ``auto``; ``cpu``, ``cuda`` and ``cuda:N`` as they are (``cuda:01``
    as ``cuda:1``); anything else is refused naming ``--device``."""
    if device is None:
        return AUTO
    match = _SPELLING.fullmatch(device)
    if match is None:
        raise DeviceError(f"--device {device}: not a device name ({DEVICE_NAMES})")
    kind, index = match.groups()
    if index is None:
        return kind
    if kind != "cuda":  # torch takes cpu:1, and then fails on the first tensor it moves
        raise DeviceError(f"--device {device}: only a GPU has an index (cuda:N); use {kind}")
    return f"cuda:{int(index)}"


def resolve_device(device: str | None) -> str:
    """The device to use on this machine: ``auto`` (or ``None``) -> cuda if present, else cpu;
    ``cuda`` and ``cuda:N`` are checked against this machine, so a typo or a missing GPU is one
    clear error, not a traceback deep in the first forward pass."""
    import torch  # here: parse_device is used by the CLI before torch is needed

    device = parse_device(device)
    if device == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: no CUDA GPU is available on this machine "
                          "(torch.cuda.is_available() is False); use --device cpu")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                          "GPU(s), numbered from 0")
    return device
