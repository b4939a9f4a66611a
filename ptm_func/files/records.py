"""The record of a run, beside its checkpoint: what was run, and one JSON line per epoch.

    runs/net-seed123.safetensors     the weights (checkpoint.py)
    runs/net-seed123.run.json        model, full config, data source, versions; the result at the end
    runs/net-seed123.metrics.jsonl   {"epoch": 1, "loss": ..., "val_accuracy": ...} per finished epoch

Lines are appended (and fsynced) as epochs finish, so a killed run keeps the epochs it finished.
A resumed run keeps the lines up to the epoch it resumes from and appends after them: no epoch
is duplicated or lost, whatever was written after the checkpoint it resumes from. With
`--track`, trackers (`tracking.py`) get the same lines as they are written.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ptm_func.data.dataset import Dataset
from ptm_func.errors import CheckpointError, RecordError
from ptm_func.files import atomic, jsonio
from ptm_func.files.checkpoint import read_metadata
from ptm_func.nets.registry import Model
from ptm_func.training.config import TrainConfig
from ptm_func.training.state import EpochStats
from ptm_func.version import version

if TYPE_CHECKING:
    from ptm_func.files.tracking import TrackedRun, Tracking

METRICS_SUFFIX = ".metrics.jsonl"
RUN_SUFFIX = ".run.json"


def _stem(checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    return path.with_name(path.name.removesuffix(".safetensors"))


def metrics_path(checkpoint: str | Path) -> Path:
    """runs/net.safetensors -> runs/net.metrics.jsonl"""
    return _stem(checkpoint).with_name(_stem(checkpoint).name + METRICS_SUFFIX)


def run_path(checkpoint: str | Path) -> Path:
    """runs/net.safetensors -> runs/net.run.json"""
    return _stem(checkpoint).with_name(_stem(checkpoint).name + RUN_SUFFIX)


def run_info(
    variant: str, model: Model, config: TrainConfig, data: Dataset, device, **extra: Any
) -> dict[str, Any]:
    """What a run is: model, full training config, data source and versions (its run.json)."""
    return {
        "variant": variant,
        "model": model.name,
        "book_class": model.book_class,
        "model_config": model.config,
        "config": asdict(config),
        "data": data.source,
        "classes": list(data.classes),
        "train_images": len(data.train),
        "val_images": len(data.val),
        "device": str(device),
        **extra,
        "versions": {"ptm_func": version(), "torch": torch.__version__, "python": platform.python_version()},
    }


def replica_path(checkpoint: str | Path, replica: int) -> Path:
    """runs/net.safetensors, 2 -> runs/net-r2.safetensors (a member of an ensemble)"""
    stem = _stem(checkpoint)
    return stem.with_name(f"{stem.name}-r{replica}.safetensors")


def numbered_run_paths(checkpoint: str | Path) -> Iterator[Path]:
    """`checkpoint`, NAME-2.safetensors, NAME-3, ...: the names a new run may take."""
    stem = _stem(checkpoint)
    yield Path(checkpoint)
    for number in itertools.count(2):
        yield stem.with_name(f"{stem.name}-{number}.safetensors")


def run_path_used(checkpoint: Path) -> bool:
    """Has a run written there (its weights, its record, or its replicas)?"""
    return any(p.exists() for p in (checkpoint, metrics_path(checkpoint), replica_path(checkpoint, 0)))


def epoch_line(stats: EpochStats) -> dict[str, Any]:
    """One epoch as a record line; K members put their per-member lists in place of the means."""
    line = asdict(stats)
    members = line.pop("members")
    if members is not None:
        line.update(members)
    return {**line, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


class RunRecord:
    """Writes the record of the run whose checkpoint is `checkpoint`."""

    def __init__(self, checkpoint: str | Path, tracking: Tracking | None = None):
        self.checkpoint = Path(checkpoint)
        self.metrics = metrics_path(checkpoint)
        self.info_path = run_path(checkpoint)
        self.info: dict[str, Any] = {}
        self.tracking = tracking  # trackers that mirror this record (--track; tracking.py)
        self.tracked: TrackedRun | None = None

    def start(
        self, info: dict[str, Any], *, resumed_from: str | Path | None = None, at_epoch: int = 0
    ) -> None:
        """Write the run's info; new metrics, or from `resumed_from`'s first `at_epoch` epochs."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        kept: list[dict[str, Any]] = []
        if resumed_from is not None:
            kept = [
                line
                for line in read_metrics(metrics_path(resumed_from), missing_ok=True)
                if line["epoch"] <= at_epoch
            ]
            previous = _read_json(run_path(resumed_from)) or {}
            info = {
                **info,
                "started": previous.get("started", now),
                "resumed": [*previous.get("resumed", []), now],
            }
        else:
            info = {**info, "started": now}
        self.info = info
        _write_atomic(self.metrics, "".join(jsonio.dumps(line) + "\n" for line in kept))
        _write_atomic(self.info_path, jsonio.dumps(info, indent=2) + "\n")
        if self.tracking:
            self.tracked = self.tracking.mirror(self.checkpoint, info, at_epoch=at_epoch, history=kept)

    def log_epoch(self, stats: EpochStats) -> None:
        """Append one epoch's line, on disk before this returns (then to the trackers)."""
        line = jsonio.finite(epoch_line(stats))
        try:
            with open(self.metrics, "a", encoding="utf-8") as f:
                f.write(jsonio.dumps(line) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise RecordError(f"cannot append to run record {self.metrics}: {err}") from None
        if self.tracked is not None:
            self.tracked.epoch(line)

    def finish(self, result: dict[str, Any]) -> None:
        """Add the final result (or how the run stopped) to the run's info."""
        self.info = {**self.info, "result": result}
        try:
            _write_atomic(self.info_path, jsonio.dumps(self.info, indent=2) + "\n")
        finally:
            if self.tracked is not None:
                files = [result.get("checkpoint") or self.checkpoint, self.metrics, self.info_path]
                self.tracked.finish(result, files)


def read_metrics(path: str | Path, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """The epoch lines of a metrics file, in order; a torn last line (a killed write) is skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise RecordError(f"no run record at {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecordError(f"cannot read run record {path}: {err}") from None
    raw_lines = text.splitlines()
    lines = []
    for number, raw in enumerate(raw_lines, 1):
        try:
            line = json.loads(raw)
            _check_line(line)
        except ValueError as err:
            if number == len(raw_lines) and not text.endswith("\n"):
                break  # the line a killed run was writing
            raise RecordError(f"{path}:{number} is not a metrics line ({err})") from None
        lines.append(line)
    return lines


CURVE_KEYS = ("loss", "train_accuracy_running", "val_accuracy")


def _check_line(line: Any) -> None:
    """Raise ValueError unless `line` is an epoch line: an epoch number and numeric curves."""
    if not isinstance(line, dict) or type(line.get("epoch")) is not int:
        raise ValueError("no epoch number")
    for key in CURVE_KEYS:
        value = line.get(key)
        values = value if isinstance(value, list) else [value]
        if not all(v is None or type(v) in (int, float) for v in values):
            raise ValueError(f"{key} is not a number, null or a list of them")


def find_metrics(run: str | Path) -> Path:
    """The metrics file of RUN: a checkpoint, its .metrics.jsonl or its .run.json."""
    path = Path(run)
    if path.is_dir():
        raise RecordError(f"{path} is a folder; give a checkpoint or its {METRICS_SUFFIX} file")
    name = path.name
    if name.endswith(METRICS_SUFFIX):
        return path
    if name.endswith(RUN_SUFFIX):
        return path.with_name(name.removesuffix(RUN_SUFFIX) + METRICS_SUFFIX)
    candidate = metrics_path(path)
    if candidate.exists() or not path.exists():
        return candidate
    # a replica of an ensemble: its checkpoint names the record the replicas share
    try:
        training = json.loads(read_metadata(path).get("training", "{}"))
        record = training.get("record") if isinstance(training, dict) else None
        return path.with_name(record) if isinstance(record, str) and record else candidate
    except (CheckpointError, ValueError):
        return candidate


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half."""
    try:
        atomic.atomic_write_text(path, text)
    except OSError as err:
        raise RecordError(f"cannot write run record {path}: {atomic.reason(err)}") from None
