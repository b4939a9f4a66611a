"""Resumable runs: the weights in PATH, the optimizer state and position in PATH's sibling, one commit."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ptm_func.errors import CheckpointError
from ptm_func.files import atomic, jsonio
from ptm_func.files.checkpoint import (
    Checkpoint,
    checkpoint_content,
    json_object,
    load_checkpoint,
    read_metadata,
    read_safetensors,
    write_temp_checkpoint,
)
from ptm_func.files.records import metrics_path
from ptm_func.nets.registry import Model
from ptm_func.training.config import TrainConfig
from ptm_func.training.optim import SGDState
from ptm_func.training.state import TrainState

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
            side_tmp = write_temp_checkpoint(side_tensors, side_metadata, side)
            written.append((side_tmp, side, path, path))
            weights_tmp = write_temp_checkpoint(
                *checkpoint_content(model, ts.params, ts.state, training), path
            )
            written[-1] = (side_tmp, side, weights_tmp, path)
    except CheckpointError:
        for side_tmp, _, weights_tmp, path in written:
            atomic.discard(side_tmp)
            if weights_tmp != path:
                atomic.discard(weights_tmp)
        raise
    committing = None
    try:
        for side_tmp, side, weights_tmp, path in written:
            committing = path
            os.replace(side_tmp, side)
            os.replace(weights_tmp, path)  # this run's commit
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {committing}: {atomic.reason(err)}") from None
    for _, _, _, path in written:
        atomic.remove_stale_temps(path)
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
    if not side.exists() and not atomic.temp_files(side):
        if not path.exists() and not atomic.temp_files(path):
            if not metrics_path(path).exists():
                raise CheckpointError(f"no checkpoint at {path}")
            raise CheckpointError(
                f"no checkpoint at {path}: the run stopped before its first save, so there is nothing "
                "to resume; start it again (the same --out, or --force for the default name)"
            )
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
    training = json_object(metadata, "training", side)
    ckpt = load_checkpoint(path, device)
    if metadata.get("model") != ckpt.model.name:
        raise CheckpointError(f"{side} is not the training state of {path}")
    atomic.remove_stale_temps(path)
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
    paths: Sequence[str | Path], device: torch.device | str = "cpu"
) -> list[tuple[Checkpoint, TrainState, TrainConfig]]:
    """Load the members saved by `save_runs`, all from the newest save every one of them has whole."""
    reachable = None
    for path in map(Path, paths):
        side = training_state_path(path)
        both = {p for p in _saved_positions(side) & _saved_positions(path) if p is not None}
        reachable = both if reachable is None else reachable & both
    if not reachable:
        raise CheckpointError(f"{paths[0]} and the other members hold no save in common")
    position = max(reachable)
    return [load_run(path, device, position=position) for path in paths]


def resumable_position(path: str | Path) -> tuple[int, int] | None:
    """The newest position both files of the run at `path` hold whole; None if it never saved."""
    path = Path(path)
    both = {p for p in _saved_positions(training_state_path(path)) & _saved_positions(path) if p is not None}
    return max(both) if both else None


def _saved_positions(target: Path) -> set[tuple[int, int] | None]:
    """Positions `target` holds whole: committed, or in complete temp files a kill left."""
    positions = {_position(_saved_training(target).get("progress"))}
    for tmp in atomic.temp_files(target):
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
    for tmp in atomic.temp_files(target):
        if _position(_saved_training(tmp).get("progress")) != position:
            continue
        try:
            read_safetensors(tmp)  # whole, not cut short
        except CheckpointError:
            continue
        os.replace(tmp, target)
        return True
    return False
