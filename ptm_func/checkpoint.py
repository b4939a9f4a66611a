"""safetensors checkpoints that load strictly into the book's nn.Modules and rebuild themselves.

A file holds `{**params, **state}` under the twin's state_dict keys (tied keys stored as
separate copies: safetensors refuses shared storage) plus string metadata: the model name,
its config as JSON, the format version and training facts. The file alone rebuilds the model.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from .layers import Params, State
from .optim import SGDState
from .registry import Model, UnknownModelError, get_model
from .train import TrainConfig, TrainState

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
    # clone: tied keys share storage, and safetensors wants contiguous, unshared CPU tensors
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in {**params, **state}.items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "config": json.dumps(model.config),
        "training": json.dumps(training or {}),
    }
    return _atomic_save(tensors, metadata, path)


def _atomic_save(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> Path:
    """save_file to a temp file, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {err}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def check_writable(path: str | Path) -> None:
    """Fail now, not after hours of training, if `path` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give a file path such as {path / 'model.safetensors'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {err}") from None


def read_safetensors(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[dict[str, Tensor], dict[str, str]]:
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
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {err}"
        ) from None
    return tensors, metadata


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, without reading its tensors."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None


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
        raise CheckpointError(
            f"{path} is format version {metadata.get('format_version')}; this ptm_func reads {FORMAT_VERSION}"
        )
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
    expected = _expected_tensors(model)
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
                problems.append(
                    f"{key} has shape {tuple(value.shape)}, "
                    f"{model.name} {model.config} needs {tuple(want.shape)}"
                )
            elif value.dtype != want.dtype:
                problems.append(f"{key} is {value.dtype}, expected {want.dtype}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit {model.name} {model.config}: " + "; ".join(problems[:4])
        )


def _expected_tensors(model: Model) -> dict[str, Tensor]:
    """The model's state_dict as shapes and dtypes only (meta tensors: no memory, no RNG work)."""
    with torch.device("meta"):
        params, state = model.init(seed=0)
    return {**params, **state}


def _short(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"


# --- resumable runs: weights in PATH, optimizer state and position in PATH's sibling -------

TRAIN_FORMAT = "ptm_func-train"


def training_state_path(path: str | Path) -> Path:
    """runs/net.safetensors -> runs/net.train.safetensors"""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + ".train.safetensors")


def save_run(
    path: str | Path, model: Model, ts: TrainState, config: TrainConfig, facts: dict[str, Any]
) -> Path:
    """Save the weights at `path` and everything needed to resume beside it."""
    progress = {
        "epoch": ts.epoch,
        "step_in_epoch": ts.step_in_epoch,
        "loss_sum": ts.loss_sum,
        "correct": ts.correct,
    }
    training = {**facts, "config": asdict(config), "progress": progress}
    tensors = {f"momentum/{k}": v for k, v in ts.opt_state.momentum.items()}
    tensors["step"] = ts.opt_state.step
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    metadata = {"format": TRAIN_FORMAT, "model": model.name, "training": json.dumps(training)}
    # The training state first: a crash between the two writes leaves weights that are one
    # save older than it, which load_run detects by comparing `progress`.
    _atomic_save(tensors, metadata, training_state_path(path))
    return save_checkpoint(path, model, ts.params, ts.state, training)


def load_run(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[Checkpoint, TrainState, TrainConfig]:
    """Load a run saved by `save_run` to continue it."""
    ckpt = load_checkpoint(path, device)
    side = training_state_path(path)
    if not side.exists():
        raise CheckpointError(
            f"{path} has no training state beside it ({side.name}): it can be evaluated, not resumed"
        )
    tensors, metadata = read_safetensors(side, device)
    if metadata.get("format") != TRAIN_FORMAT or metadata.get("model") != ckpt.model.name:
        raise CheckpointError(f"{side} is not the training state of {path}")
    training = json.loads(metadata["training"])
    if training.get("progress") != ckpt.training.get("progress"):
        raise CheckpointError(f"{side} and {path} are from different saves (interrupted write?)")
    progress = training["progress"]
    momentum = {k.removeprefix("momentum/"): v for k, v in tensors.items() if k.startswith("momentum/")}
    ts = TrainState(
        ckpt.params,
        ckpt.state,
        SGDState(momentum, tensors["step"]),
        progress["epoch"],
        progress["step_in_epoch"],
        progress["loss_sum"],
        progress["correct"],
    )
    return ckpt, ts, TrainConfig(**training["config"])
