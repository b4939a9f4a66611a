"""Convert between the book's `torch.save(model.state_dict())` .pt files and our .safetensors.

A .pt that ptm writes is still the book's plain state_dict; it also names its model in the
state_dict's own `_metadata` (what `load_state_dict` reads per module, ignoring keys it does
not know), so converting it back needs no --model. The config is always read off the shapes.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ptm_func.catalog import MODEL_NAMES
from ptm_func.errors import CheckpointError, ModelConfigError, SettingsError
from ptm_func.files import atomic, jsonio
from ptm_func.files.checkpoint import (
    BLOCK_KEY,
    FORMAT,
    check_state_dict,
    load_checkpoint,
    read_safetensors,
    save_checkpoint,
)
from ptm_func.nets.registry import Model, get_model

# The key, in the root module's state_dict `_metadata`, that holds {"model": ..., "config": ...}.
PT_MODEL_KEY = "ptm_func_model"


class ModelNotInferred(SettingsError):
    """A state_dict's keys and shapes fit several models: --model must say which (exit 2)."""


def read_pt_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load a .pt state_dict safely (weights_only=True), unwrapping {"state_dict": ...}."""
    return _read_pt(path)[0]


def recorded_model(metadata: Any) -> str | None:
    """The model name ptm recorded in a .pt state_dict's `_metadata`, if any (and known)."""
    root = metadata.get("") if isinstance(metadata, dict) else None
    if not isinstance(root, dict):
        return None
    try:
        name = json.loads(root[PT_MODEL_KEY])["model"]
    except (TypeError, KeyError, ValueError):
        return None
    return name if name in MODEL_NAMES else None


def _read_pt(path: str | Path) -> tuple[dict[str, Tensor], str | None]:
    """A .pt file's state_dict, and the model ptm recorded in it (None: a book or other file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a loadable torch state_dict (truncated, corrupt or unsafe?): {err}"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a dict of tensors)")
    return dict(obj), recorded_model(getattr(obj, "_metadata", None))


def read_plain_safetensors(path: str | Path) -> dict[str, Tensor]:
    """A state_dict saved with safetensors but without ptm_func's metadata (e.g. save_file)."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") == FORMAT:
        raise CheckpointError(f"{path} is a ptm_func checkpoint already; convert it to .pt, or copy it")
    return tensors


def infer_config(name: str, tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Read n_chans1 / n_blocks / tied / n_classes off a state_dict's shapes and keys for model `name`."""
    config: dict[str, Any] = {}
    fc2 = tensors.get("fc2.weight")
    if fc2 is not None and fc2.dim() == 2:  # (n_classes, 32); a wrong shape is check_state_dict's to report
        config["n_classes"] = fc2.shape[0]
    if name != "net":
        config["n_chans1"] = _conv1_channels(tensors)
    if name == "resdeep":
        blocks = sorted({int(m.group(1)) for k in tensors if (m := BLOCK_KEY.match(k))})
        if blocks != list(range(len(blocks))):
            shown = ", ".join(map(str, blocks[:3] + (["..."] if len(blocks) > 3 else [])))
            raise CheckpointError(f"its resblocks are numbered {shown}, not 0..n-1")
        config["n_blocks"] = len(blocks)
        first, last = "resblocks.0.conv.weight", f"resblocks.{config['n_blocks'] - 1}.conv.weight"
        # torch.save keeps the book's sharing; equal weights in different blocks mean tied too
        config["tied"] = (
            config["n_blocks"] > 1
            and first in tensors
            and last in tensors
            and (
                tensors[first].data_ptr() == tensors[last].data_ptr()
                or torch.equal(tensors[first], tensors[last])
            )
        )
    return config


def _conv1_channels(tensors: dict[str, Tensor]) -> int:
    """Output channels of conv1, which every chapter-8 model has as a 4-d weight."""
    weight = tensors.get("conv1.weight")
    if weight is None or weight.dim() != 4:
        found = "no conv1.weight" if weight is None else f"conv1.weight of shape {tuple(weight.shape)}"
        raise CheckpointError(f"it has {found}; every chapter-8 model has a 4-d conv1.weight")
    return weight.shape[0]


def infer_model_name(tensors: dict[str, Tensor]) -> str:
    """Name the model a state_dict belongs to, or raise when its keys fit several."""
    keys = set(tensors)
    if any(k.startswith("resblocks.") for k in keys):
        return "resdeep"
    if "conv1_batchnorm.weight" in keys:
        return "batchnorm"
    if "conv3.weight" in keys:
        candidates = ["depth", "res"]
    elif "conv2.weight" in keys:
        candidates = ["net", "width", "dropout"] if _conv1_channels(tensors) == 16 else ["width", "dropout"]
    else:
        raise CheckpointError(
            f"these keys fit no chapter-8 model: {sorted(keys)[:6]} (your own? give --model FILE.py:ATTR)"
        )
    fitting = [c for c in candidates if _fits(c, tensors)]
    if not fitting:  # the keys are the family's, the shapes no member's: its first says how they differ
        return candidates[0]
    if len(fitting) == 1:
        return fitting[0]
    candidates = fitting
    fits = ", ".join(candidates[:-1]) + f" and {candidates[-1]}"
    options = ", ".join(f"--model {c}" for c in candidates[:-1]) + f" or --model {candidates[-1]}"
    raise ModelNotInferred(f"its keys and shapes fit {fits} alike; say which: {options}")


def _fits(name: str, tensors: dict[str, Tensor]) -> bool:
    """Do the keys and shapes make a model `name` (its config read off them)?"""
    try:
        check_state_dict(get_model(name, **infer_config(name, tensors)), tensors, source="")
    except (CheckpointError, ModelConfigError):
        return False
    return True


def model_for_state_dict(
    tensors: dict[str, Tensor], name: str | None = None, recorded: str | None = None, **config: Any
) -> Model:
    """The model a state_dict belongs to: `name`, else the one `recorded` in its file, else
    inferred from its keys; config read off the shapes (`config` overrides)."""
    name = name or recorded or infer_model_name(tensors)
    if name not in MODEL_NAMES:  # a user's model: its options as given, its outputs off its head
        return _user_model_for(tensors, name, config)
    try:
        model = get_model(name, **{**infer_config(name, tensors), **config})
    except ModelConfigError as err:  # e.g. an fc2 of one output: n_classes 1
        read = " (n_classes: the rows of fc2.weight)" if "n_classes" in str(err) else ""
        raise CheckpointError(f"its shapes make no {name}: {err}{read}") from None
    check_state_dict(model, tensors, source="the state_dict")
    return model


def _user_model_for(tensors: dict[str, Tensor], name: str, config: dict[str, Any]) -> Model:
    model = get_model(name, **config)
    rows = tensors.get(f"{model.head}.weight")
    if rows is not None and rows.dim() == 2 and rows.shape[0] != model.n_classes and not model.outputs_fixed:
        model = model.with_classes(rows.shape[0])
    check_state_dict(model, tensors, source="the state_dict")
    return model


def pt_to_safetensors(src: str | Path, dst: str | Path, name: str | None = None, **config: Any) -> Model:
    """Convert a book .pt state_dict (or a plain .safetensors one) into a ptm_func checkpoint.

    Raises ModelNotInferred (a SettingsError) when `name` is None and the keys fit several models.
    """
    if Path(src).suffix == ".safetensors":
        tensors, recorded = read_plain_safetensors(src), None
    else:
        tensors, recorded = _read_pt(src)
    try:
        model = model_for_state_dict(tensors, name, recorded, **config)
    except (CheckpointError, ModelNotInferred) as err:
        raise type(err)(f"{src}: {err}") from None
    params, state = model.split(tensors)
    save_checkpoint(dst, model, params, state, {"converted_from": str(src)})
    return model


def safetensors_to_pt(src: str | Path, dst: str | Path, name: str | None = None) -> Model:
    """Write a checkpoint as the book's `torch.save(model.state_dict())` file."""
    ckpt = load_checkpoint(src, expect_model=name)
    module = ckpt.model.module()
    module.load_state_dict({**ckpt.params, **ckpt.state}, strict=True)
    # the module's own state_dict: tied keys stay shared, as in the book's file
    state_dict = module.state_dict()
    record = jsonio.dumps({"model": ckpt.model.name, "config": ckpt.model.config})
    # torch's state_dict() is an OrderedDict carrying `_metadata`, which its annotation (dict) omits
    metadata = state_dict._metadata  # pyright: ignore[reportAttributeAccessIssue]
    metadata[""] = {**metadata.get("", {}), PT_MODEL_KEY: record}
    try:
        atomic.atomic_write(dst, lambda tmp: torch.save(state_dict, tmp))
    except OSError as err:
        raise CheckpointError(f"cannot write {dst}: {atomic.reason(err)}") from None
    return ckpt.model
