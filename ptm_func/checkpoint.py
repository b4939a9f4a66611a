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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from . import files, jsonio
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
    return _atomic_save(*_checkpoint_content(model, params, state, training or {}), Path(path))


def _checkpoint_content(
    model: Model, params: Params, state: State, training: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, str]]:
    # clone: tied keys share storage, and safetensors wants contiguous, unshared CPU tensors
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in {**params, **state}.items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "config": json.dumps(model.config),
        "training": jsonio.dumps(training),
    }
    return tensors, metadata


def _atomic_save(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> Path:
    """Write a temp file, then rename it over `path`: readers see the old file or the new one."""
    try:
        return files.atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {files.reason(err)}") from None


def _write_temp(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> Path:
    """Write `path`'s content completely beside it (not yet renamed); return the temp file."""
    try:
        return files.write_temp(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {files.reason(err)}") from None


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
        except (CheckpointError, files.WriteError, OSError):
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
    config = _json_object(metadata, "config", path)
    training = _json_object(metadata, "training", path)
    classes = training.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{path}: its class names are not a list of strings")
    _check_blocks_fit(config, tensors, path)
    try:
        model = get_model(metadata["model"], **config)
    except (UnknownModelError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild its model: {err}") from None
    check_state_dict(model, tensors, source=str(path))
    params, state = model.split(tensors)
    return Checkpoint(model, params, state, training)


def _json_object(metadata: dict[str, str], key: str, path) -> dict[str, Any]:
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


def load_ensemble(paths: list[str | Path], device: torch.device | str = "cpu") -> list[Checkpoint]:
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
    """All replicas of the `--replicas` run that `path` belongs to (as its record lists them)."""
    path = Path(path)
    training = _json_object(read_metadata(path), "training", path)
    record = training.get("record")
    if not isinstance(record, str) or "replica" not in training:
        raise CheckpointError(f"{path} is not a replica of an ensemble (ptm train --replicas)")
    info_path = path.with_name(record.removesuffix(".metrics.jsonl") + ".run.json")
    try:
        listed = json.loads(info_path.read_text(encoding="utf-8"))["result"]["checkpoints"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"cannot find the ensemble of {path} in {info_path} ({err})") from None
    return [Path(p) for p in listed]


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
    """Save the weights at `path` and everything needed to resume beside it, as one commit.

    Both files are written completely to temp files first, then renamed: the training state,
    then the weights. A kill between the two renames leaves the new weights whole in their temp
    file, and `load_run` finishes that commit; any other kill leaves the previous save intact.
    """
    return save_runs([(path, model, ts, config, facts)])[0]


def save_runs(runs: list[tuple[str | Path, Model, TrainState, TrainConfig, dict[str, Any]]]) -> list[Path]:
    """Save several runs (the members of a sweep) as one commit: every file of every run is
    written to a temp file first, then all are renamed. `load_runs` finishes what a kill cut."""
    written: list[tuple[Path, Path, Path, Path]] = []  # (side temp, side, weights temp, weights)
    try:
        for path, model, ts, config, facts in runs:
            path = Path(path)
            training = {**facts, "config": asdict(config), "progress": _progress(ts)}
            side_tensors = {f"momentum/{k}": v for k, v in ts.opt_state.momentum.items()}
            side_tensors["step"] = ts.opt_state.step
            side_tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in side_tensors.items()}
            side_metadata = {"format": TRAIN_FORMAT, "model": model.name, "training": jsonio.dumps(training)}
            side = training_state_path(path)
            side_tmp = _write_temp(side_tensors, side_metadata, side)
            written.append((side_tmp, side, path, path))
            weights_tmp = _write_temp(*_checkpoint_content(model, ts.params, ts.state, training), path)
            written[-1] = (side_tmp, side, weights_tmp, path)
    except CheckpointError:
        for side_tmp, _, weights_tmp, path in written:
            files.discard(side_tmp)
            if weights_tmp != path:
                files.discard(weights_tmp)
        raise
    try:
        for side_tmp, side, weights_tmp, path in written:
            os.replace(side_tmp, side)
            os.replace(weights_tmp, path)  # this run's commit
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {files.reason(err)}") from None
    for _, _, _, path in written:
        files.remove_stale_temps(path)
    return [path for _, _, _, path in written]


def _progress(ts: TrainState) -> dict[str, Any]:
    return {
        "epoch": ts.epoch,
        "step_in_epoch": ts.step_in_epoch,
        "loss_sum": ts.loss_sum,
        "correct": ts.correct,
    }


def _position(progress: Any) -> tuple[int, int] | None:
    """(epoch, step) of a saved progress dict, None if it is not one."""
    try:
        return int(progress["epoch"]), int(progress["step_in_epoch"])
    except (KeyError, TypeError, ValueError):
        return None


def load_run(
    path: str | Path, device: torch.device | str = "cpu", *, position: tuple[int, int] | None = None
) -> tuple[Checkpoint, TrainState, TrainConfig]:
    """Load a run saved by `save_run` to continue it, finishing a save a kill interrupted.

    `position` (epoch, step) picks the save to continue from, when several are on disk
    (a sweep's members must all continue from the same one); default: the newest committed.
    """
    path = Path(path)
    side = training_state_path(path)
    if not side.exists() and not files.temp_files(side):
        raise CheckpointError(
            f"{path} has no training state beside it ({side.name}): it can be evaluated, not resumed"
        )
    if position is None:
        position = _position(_saved_training(side).get("progress"))
    for target in (side, path):
        saved = _saved_training(target).get("progress") if target.exists() else None
        if _position(saved) != position and not _finish_commit(target, position):
            raise CheckpointError(
                f"{side} and {path} are from different saves, and no complete newer save is left"
            )
    tensors, metadata = read_safetensors(side, device)
    if metadata.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"{side} is not a ptm_func training state")
    training = _json_object(metadata, "training", side)
    ckpt = load_checkpoint(path, device)
    if metadata.get("model") != ckpt.model.name:
        raise CheckpointError(f"{side} is not the training state of {path}")
    files.remove_stale_temps(path)
    try:
        progress = training["progress"]
        momentum = {k.removeprefix("momentum/"): v for k, v in tensors.items() if k.startswith("momentum/")}
        ts = TrainState(
            ckpt.params,
            ckpt.state,
            SGDState(momentum, tensors["step"]),
            int(progress["epoch"]),
            int(progress["step_in_epoch"]),
            float(progress["loss_sum"]),
            int(progress["correct"]),
        )
        config = TrainConfig(**training["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{side}: its training state is incomplete or invalid ({err})") from None
    trainable = {k: tuple(v.shape) for k, v in ckpt.params.items() if k not in ckpt.model.aliases}
    buffers = {k: tuple(v.shape) for k, v in momentum.items()}
    if buffers != (trainable if config.momentum else {}):
        raise CheckpointError(f"{side}: its momentum buffers do not fit the weights in {path}")
    if ts.opt_state.step.shape != () or ts.opt_state.step.dtype != torch.int64:
        raise CheckpointError(f"{side}: its step count is not a 0-d int64 tensor")
    return ckpt, ts, config


def load_runs(
    paths: list[str | Path], device: torch.device | str = "cpu"
) -> list[tuple[Checkpoint, TrainState, TrainConfig]]:
    """Load the members saved by `save_runs`, all from the newest save every one of them has whole."""
    reachable = None
    for path in map(Path, paths):
        side = training_state_path(path)
        both = (_saved_positions(side) & _saved_positions(path)) - {None}
        reachable = both if reachable is None else reachable & both
    if not reachable:
        raise CheckpointError(f"{paths[0]} and the other members hold no save in common")
    position = max(reachable)
    return [load_run(path, device, position=position) for path in paths]


def _saved_positions(target: Path) -> set[tuple[int, int] | None]:
    """Positions `target` holds whole: committed, or in complete temp files a kill left."""
    positions = {_position(_saved_training(target).get("progress"))}
    for tmp in files.temp_files(target):
        try:
            read_safetensors(tmp)
        except CheckpointError:
            continue
        positions.add(_position(_saved_training(tmp).get("progress")))
    return positions


def _saved_training(path: Path) -> dict[str, Any]:
    """The training facts a (complete) checkpoint or training state file holds; {} if unreadable."""
    try:
        training = json.loads(read_metadata(path).get("training", "{}"))
    except (CheckpointError, ValueError):
        return {}
    return training if isinstance(training, dict) else {}


def _finish_commit(target: Path, position: tuple[int, int] | None) -> bool:
    """Rename in a complete temp file of `target` saved at `position` (a kill cut its commit)."""
    for tmp in files.temp_files(target):
        if _position(_saved_training(tmp).get("progress")) != position:
            continue
        try:
            read_safetensors(tmp)  # whole, not cut short
        except CheckpointError:
            continue
        os.replace(tmp, target)
        return True
    return False
