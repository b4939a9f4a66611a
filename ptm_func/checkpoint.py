"""safetensors checkpoints that load strictly into the book's nn.Modules and rebuild themselves.

A file holds `{**params, **state}` under the twin's state_dict keys (tied keys stored as
separate copies: safetensors refuses shared storage) plus string metadata: the model name,
its config as JSON, the format version and training facts. The file alone rebuilds the model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .layers import Params, State
from .registry import Model, UnknownModelError, get_model

FORMAT = "ptm_func"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model; the message says which."""


@dataclass
class Checkpoint:
    model: Model
    params: Params
    state: State
    training: dict[str, Any] = field(default_factory=dict)  # epochs, seed, metrics, config


def save_checkpoint(
    path: str | Path, model: Model, params: Params, state: State, training: dict[str, Any] | None = None
) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # clone: tied keys share storage, and safetensors wants contiguous, unshared CPU tensors
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in {**params, **state}.items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "config": json.dumps(model.config),
        "training": json.dumps(training or {}),
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_safetensors(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read every tensor (onto `device`) and the metadata, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None
    return tensors, metadata


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", *, expect_model: str | None = None
) -> Checkpoint:
    """Load a checkpoint into (params, state) on `device` (map_location semantics)."""
    tensors, metadata = read_safetensors(path, device)
    if metadata.get("format") != FORMAT or "model" not in metadata:
        raise CheckpointError(
            f"{path} has no ptm_func metadata (model name and config); "
            "import plain state_dicts with `ptm convert IN OUT --model NAME`"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is format version {metadata.get('format_version')}; this ptm_func reads {FORMAT_VERSION}")
    if expect_model is not None and metadata["model"] != expect_model:
        raise CheckpointError(f"{path} holds a {metadata['model']!r} model, not {expect_model!r}")
    try:
        model = get_model(metadata["model"], **json.loads(metadata["config"]))
    except (UnknownModelError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild its model: {err}") from None
    check_state_dict(model, tensors, source=str(path))
    params, state = model.split(tensors)
    return Checkpoint(model, params, state, json.loads(metadata.get("training", "{}")))


def check_state_dict(model: Model, tensors: dict[str, Tensor], *, source: str) -> None:
    """Raise CheckpointError naming missing / unexpected keys and shape or dtype mismatches."""
    expected = {**dict(zip(*_init_items(model)))}
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    for key, value in tensors.items():
        if key in expected:
            want = expected[key]
            if tuple(value.shape) != tuple(want.shape):
                problems.append(f"{key} has shape {tuple(value.shape)}, {model.name} {model.config} needs {tuple(want.shape)}")
            elif value.dtype != want.dtype:
                problems.append(f"{key} is {value.dtype}, expected {want.dtype}")
    if problems:
        raise CheckpointError(f"{source} does not fit {model.name} {model.config}: " + "; ".join(problems[:4]))


def _init_items(model: Model) -> tuple[list[str], list[Tensor]]:
    with torch.device("meta"):
        params, state = model.init(seed=0)
    merged = {**params, **state}
    return list(merged), list(merged.values())


def _short(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"
