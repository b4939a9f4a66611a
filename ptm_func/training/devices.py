"""Device selection with a clear error instead of a CUDA traceback."""

from __future__ import annotations

import torch

from ptm_func.errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when present, else cpu; 'cuda' without CUDA raises DeviceError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "--device cuda was asked for, but no CUDA device is available here; use --device cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"unsupported device {name!r}; use auto, cpu or cuda")
    return device
