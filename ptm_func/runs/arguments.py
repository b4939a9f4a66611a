"""The run API's own arguments, checked by type before anything is read or written.

The CLI's parser already hands over ints, bools and paths; a Python caller can pass anything
(`epochs="2"`, `replicas=2.5`, `seed=True`, `out=123`). Each is refused here with a
SettingsError naming the argument, instead of a TypeError deep inside, or a file named
`net-seedTrue`. The TrainConfig fields are checked by TrainConfig itself (training/config.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import torch

from ptm_func.data.folders import check_class_names
from ptm_func.errors import SettingsError
from ptm_func.runs.reporter import Reporter


def _kind(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def whole(name: str, value: Any) -> int:
    """`value` as an int: ints (numpy's too), never a bool, a float or a string."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise SettingsError(f"{name} must be a whole number, got {_kind(value)}")
    return int(value)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{name} must be True or False, got {_kind(value)}")
    return value


def path_or_none(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise SettingsError(f"{name} must be a path (str or pathlib.Path), got {_kind(value)}")
    if isinstance(value, str) and not value.strip():
        raise SettingsError(f"{name} must be a path, got an empty string")


def names_or_none(name: str, value: Any) -> None:
    """None, or a list or tuple of strings (a lone string is refused: "cat" is not ["c", "a", "t"])."""
    if value is None:
        return
    listed = isinstance(value, Sequence) and not isinstance(value, str)
    if not listed or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{name} must be a list of names, got {_kind(value)}")


def check_variant_and_world(variant: Any, world: Any, *, optional: bool = False) -> None:
    if not (isinstance(variant, str) or (optional and variant is None)):
        raise SettingsError(f"the model must be a name, got {_kind(variant)}")
    from ptm_func.training.distributed import World

    if world is not None and not isinstance(world, World):
        raise SettingsError(f"world must be a ptm_func World or None, got {_kind(world)}")


def check_common(
    *,
    out: Any,
    resume: Any,
    data: Any,
    classes: Any,
    device: Any,
    checkpoint_every: Any,
    reporter: Any,
    stop_on_signals: Any,
    track: Any,
) -> None:
    """The arguments run_training and run_sweep share."""
    for name, value in (("out", out), ("resume", resume), ("data", data)):
        path_or_none(name, value)
    names_or_none("classes", classes)
    if classes is not None:
        check_class_names([c.strip() for c in classes])
    if not isinstance(device, (str, torch.device)):
        raise SettingsError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {_kind(device)}")
    if isinstance(device, torch.device):  # checked as its name would be: no meta, no absent CUDA
        from ptm_func.training.devices import resolve_device

        resolve_device(str(device))
    whole("checkpoint_every", checkpoint_every)
    if reporter is not None and not isinstance(reporter, Reporter):
        raise SettingsError(f"reporter must be a ptm_func.Reporter, got {_kind(reporter)}")
    if flag("stop_on_signals", stop_on_signals) and threading.current_thread() is not threading.main_thread():
        raise SettingsError("stop_on_signals needs the main thread: Python delivers signals only there")
    if track is not None and not isinstance(track, str):
        names_or_none("track", track)
