"""The compute device a user asked for, checked before any work starts."""

from __future__ import annotations

import torch

from sertool.errors import SertoolError


class DeviceError(SertoolError, ValueError):
    """A device that does not exist on this machine."""


def resolve_device(device: str | None) -> str:
    """``None`` -> the best available (cuda if present); ``cpu``, ``cuda`` or ``cuda:N`` are
    checked against this machine so a typo or a missing GPU is one clear error, not a traceback
    deep in the first forward pass."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise DeviceError(f"--device {device}: not a device name (cpu, cuda or cuda:N)") from err
    if parsed.type == "cpu":
        return device
    if parsed.type != "cuda":
        raise DeviceError(f"--device {device}: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: no CUDA GPU is available on this machine "
                          "(torch.cuda.is_available() is False); use --device cpu")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                          "GPU(s), numbered from 0")
    return device
