"""safetensors checkpoints that load strictly into the book's nn.Modules and rebuild themselves.

A file holds `{**params, **state}` under the twin's state_dict keys (tied keys stored as
separate copies: safetensors refuses shared storage) plus string metadata: the model name,
its config as JSON, the format version and training facts. The file alone rebuilds the model.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ptm_func.errors import CheckpointError, UnknownModelError
from ptm_func.files import atomic, jsonio
from ptm_func.nets.layers import Params, State
from ptm_func.nets.registry import (
    Model,
    get_model,
    is_builtin,
    reference_of_model,
    require_rebuildable,
)
from ptm_func.text import printable
from ptm_func.version import version

FORMAT = "ptm_func"
FORMAT_VERSION = "1"


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
    return _atomic_save(*checkpoint_content(model, params, state, training or {}), Path(path))


def checkpoint_content(
    model: Model, params: Params, state: State, training: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, str]]:
    # clone: tied keys share storage, and safetensors wants contiguous, unshared CPU tensors
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in {**params, **state}.items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ptm_func_version": version(),  # the package that wrote it (ptm_func.version)
        "model": model.name,
        "config": json.dumps(model.config),
        "training": jsonio.dumps(training),
    }
    if not model.builtin:  # how to give it again: text only, never imported from here
        metadata["reference"] = reference_of_model(model.name)
    return tensors, metadata


def _atomic_save(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> Path:
    """Write a temp file, then rename it over `path`: readers see the old file or the new one."""
    try:
        return atomic.atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {atomic.reason(err)}") from None


def write_temp_checkpoint(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> Path:
    """Write `path`'s content completely beside it (not yet renamed); return the temp file."""
    try:
        return atomic.write_temp(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {atomic.reason(err)}") from None


def checkpoint_bytes(model: Model, *, with_training_state: bool = True) -> int:
    """About how many bytes a save of `model` takes (weights, and momentum beside them)."""
    tensors = _expected_tensors(model).values()
    weights = sum(t.numel() * t.element_size() for t in tensors)
    return (2 if with_training_state else 1) * weights + (64 << 10)  # + headers


def save_or_rescue(save: Callable[[Path], Path], path: str | Path) -> tuple[Path, str | None]:
    """Call `save(path)`; if it fails, `save` into a rescue file instead. Returns (where, why not path).

    The rescue goes to the temp folder, else ~/.cache/ptm_func/rescue: a full disk or a vanished
    folder at the end of a long run then costs a move, not the run.
    """
    path = Path(path)
    try:
        return save(path), None
    except CheckpointError as err:
        failure = str(err)
    name = f"ptm-rescue-{os.getpid()}-{path.name}"
    for folder in (Path(tempfile.gettempdir()), Path.home() / ".cache" / "ptm_func" / "rescue"):
        try:
            return save(folder / name), failure
        except (CheckpointError, atomic.WriteError, OSError):
            continue
    raise CheckpointError(f"{failure}; no rescue copy could be written either (temp folder, ~/.cache)")


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
    config = json_object(metadata, "config", path)
    training = json_object(metadata, "training", path)
    classes = training.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{path}: its class names are not a list of strings")
    _check_blocks_fit(config, tensors, path)
    _check_model_known(metadata, path)
    if not is_builtin(metadata["model"]):  # shapes first, on the meta device: no allocation
        with torch.device("meta"):
            try:
                dry = get_model(metadata["model"], **config)
            except (UnknownModelError, ValueError) as err:
                raise CheckpointError(f"{path}: cannot rebuild its model: {err}") from None
        check_state_dict(dry, tensors, source=str(path))
    try:
        model = get_model(metadata["model"], **config)
    except (UnknownModelError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild its model: {err}") from None
    check_state_dict(model, tensors, source=str(path))
    if len(set(classes)) != len(classes):
        raise CheckpointError(f"{path}: its class names repeat ({', '.join(classes)})")
    if classes and len(classes) != model.n_classes:  # output i is recorded class i: none may lack one
        raise CheckpointError(
            f"{path}: its model has {model.n_classes} outputs but it names {len(classes)} classes "
            f"({', '.join(classes)}); no output can be read as a class"
        )
    params, state = model.split(tensors)
    return Checkpoint(model, params, state, training)


def _check_model_known(metadata: dict[str, str], path) -> None:
    """A user's model must be given (registered, a reference, or installed) before its checkpoint
    loads: ptm never imports the code a file names (a crafted file could name any)."""
    name, reference = metadata["model"], metadata.get("reference")
    if reference:  # without one, get_model says the name is unknown
        shown = printable(reference)
        again = f"as the MODEL of ptm train or sweep, or --model {shown} for eval, predict, info and convert"
        require_rebuildable(name, reference, str(path), again)


def json_object(metadata: dict[str, str], key: str, path) -> dict[str, Any]:
    try:
        value = json.loads(metadata.get(key, "{}"))
    except ValueError:
        raise CheckpointError(f"{path}: its metadata {key!r} is not valid JSON") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: its metadata {key!r} is not a JSON object")
    return value


BLOCK_KEY = re.compile(r"resblocks\.(\d+)\.")


def _check_blocks_fit(config: dict[str, Any], tensors: dict[str, Tensor], path) -> None:
    """Refuse a block count the file's tensors do not hold, before building any model."""
    if "n_blocks" in config:
        held = {int(m.group(1)) for key in tensors if (m := BLOCK_KEY.match(key))}
        if config["n_blocks"] != len(held):
            raise CheckpointError(
                f"{path}: its config says n_blocks={config['n_blocks']!r} but it holds {len(held)} blocks"
            )


def load_ensemble(paths: Sequence[str | Path], device: torch.device | str = "cpu") -> list[Checkpoint]:
    """Several checkpoints to predict together: they must name the same classes, in order."""
    checkpoints = [load_checkpoint(path, device) for path in paths]
    classes = [c.training.get("classes") for c in checkpoints]
    if any(c != classes[0] for c in classes):
        raise CheckpointError(
            f"{paths[0]} and {paths[classes.index(next(c for c in classes if c != classes[0]))]} "
            "were trained on different classes; an ensemble needs the same ones"
        )
    return checkpoints


def ensemble_paths(path: str | Path) -> list[Path]:
    """Every finished seed of the grid point `path` belongs to (a sweep's or --replicas' member,
    as the folder's sweep.json lists them; an older --replicas run's, as its record does).
    Paths are found beside `path`, wherever the run was started from."""
    path = Path(path)
    training = json_object(read_metadata(path), "training", path)
    if isinstance(training.get("sweep"), dict):
        return _seeds_of_point(path, training["sweep"])
    record = training.get("record")
    if not isinstance(record, str) or "replica" not in training:
        raise CheckpointError(
            f"{path} is not a member of a sweep or ensemble (ptm sweep, ptm train --replicas)"
        )
    info_path = path.with_name(Path(record).name.removesuffix(".metrics.jsonl") + ".run.json")
    try:
        listed = json.loads(info_path.read_text(encoding="utf-8"))["result"]["checkpoints"]
        return [path.with_name(Path(p).name) for p in listed]  # siblings of `path`
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"cannot find the ensemble of {path} in {info_path} ({err})") from None


def _seeds_of_point(path: Path, values: dict[str, Any]) -> list[Path]:
    """The members of `path`'s sweep folder with the same swept values that finished."""
    spec_path = path.with_name("sweep.json")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        results = spec["results"]["members"]
        same = [r for r in results if all(r.get(k) == v for k, v in values.items())]
        names = [
            Path(r["checkpoint"]).name
            for r in same
            if r["val_accuracy"] is not None and not r["diverged_in_epoch"]
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"cannot find the seeds of {path} in {spec_path} (a finished sweep's): {err}"
        ) from None
    if path.name not in names:
        raise CheckpointError(f"{path} is not a finished member of the sweep in {spec_path}")
    return [path.with_name(name) for name in names]


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
