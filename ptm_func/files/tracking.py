"""Trackers: a run's record mirrored into TensorBoard or MLflow as it is written (`--track`).

    runs/net-seed123.tb/   TensorBoard events beside the checkpoint: per epoch the record's loss,
                           train_accuracy_running, val_accuracy, seconds, samples_per_second and
                           the lr (step = epoch); at the end the hyperparameters with
                           final/train_accuracy and final/val_accuracy (eval mode) for the HParams
                           tab. A sweep member's folder is beside its checkpoint in the sweep's
                           folder; `ptm compare`'s are runs/compare.tb/VARIANT.
    MLflow                 a run in MLflow's own tracking location (MLFLOW_TRACKING_URI when set,
                           else MLflow's default), named after the checkpoint: params (the
                           TrainConfig fields, model.* options, variant, classes, data), the same
                           metrics per epoch, final/* at the end, and the checkpoint, its
                           .metrics.jsonl and .run.json as artifacts. A sweep or a comparison is a
                           parent run with a nested run per member (tag mlflow.parentRunId).

The record (`records.py`) stays the source of truth and the trackers see exactly its lines: a
tracker that fails (a full disk, a server gone, any exception of its library) says so once and
is quiet for the rest of the run, and training goes on. A resumed run continues its TensorBoard
folder (events from the resumed epoch on are replaced) and is a new MLflow run holding every epoch
of the record. The libraries are optional extras (`pip install 'ptm_func[tensorboard]'`,
`'ptm_func[mlflow]'`), imported only when asked for, in `trackers.py`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ptm_func.catalog import TRACKERS
from ptm_func.errors import SettingsError, TrackerUnavailable
from ptm_func.files.trackers import (
    FAILED,
    FINISHED,
    KILLED,
    KINDS,
    PACKAGES,
    Tracker,
    installed,
    needs,
    number,
    plain,
    short,
)
from ptm_func.text import printable

TB_SUFFIX = ".tb"


def check_trackers(track: str | Iterable[str] | None) -> tuple[str, ...]:
    """The tracker names of `track` ("tensorboard,mlflow" or a sequence), each once, checked
    without importing them: SettingsError for an unknown name, TrackerUnavailable for one whose
    package is not installed."""
    if track is None:
        return ()
    names: list[str] = []
    for part in track.split(",") if isinstance(track, str) else track:
        name = str(part).strip()
        if not name or name in names:
            continue
        if name not in TRACKERS:
            known = ", ".join(TRACKERS)
            raise SettingsError(f"--track: unknown tracker '{printable(name)}'; choose from: {known}")
        if not installed(PACKAGES[name]):
            raise TrackerUnavailable(needs(name, f"the {PACKAGES[name]} package"))
        names.append(name)
    return tuple(names)


def open_tracking(track: str | Iterable[str] | None, warn: Callable[[str], None] | None = None) -> Tracking:
    """The trackers `track` names, their libraries imported (before any work: TrackerUnavailable
    when one cannot be); `warn` gets the one line a failing tracker says."""
    return Tracking(check_trackers(track), warn)


def tensorboard_dir(checkpoint: str | Path) -> Path:
    """runs/net.safetensors -> runs/net.tb (the run's TensorBoard events)"""
    return Path(checkpoint).with_name(_stem(checkpoint) + TB_SUFFIX)


def run_status(result: dict[str, Any]) -> str:
    """How a run ended, from its record's result: FINISHED, KILLED (interrupted) or FAILED (diverged)."""
    if result.get("diverged_in_epoch") is not None or result.get("failed"):
        return FAILED
    if result.get("interrupted_at") is None and number(result.get("val_accuracy")):
        return FINISHED
    return KILLED


class Tracking:
    """The trackers of a run, a sweep or a comparison; `Tracking()` tracks nothing.

    `mirror` (or `open_run`) starts a run; `group` a parent whose runs nest under it (a sweep).
    """

    def __init__(self, names: Sequence[str] = (), warn: Callable[[str], None] | None = None):
        self.warn = warn or _stderr
        self.trackers: list[Tracker] = [KINDS[name](self.warn) for name in names]
        self.parent: dict[Tracker, Any] = {}  # a group's own run, per tracker
        self.opened: set[str] = set()  # the runs started here, by name

    def __bool__(self) -> bool:
        """Does a tracker work? (One that failed at its start has said so, and is quiet.)"""
        return any(not tracker.broken for tracker in self.trackers)

    def describe(self, events: str = "NAME.tb beside each checkpoint", logdir: str | Path = "runs") -> str:
        """`tracking: tensorboard (NAME.tb beside each checkpoint; view: tensorboard --logdir
        LOGDIR), mlflow (sqlite:///...; view: mlflow ui)`"""
        return "tracking: " + ", ".join(t.where(events, str(logdir)) for t in self.trackers if not t.broken)

    def mirror(self, checkpoint: str | Path, info: dict[str, Any], **kwargs: Any) -> TrackedRun:
        """The run of `checkpoint`'s record: named after it, its TensorBoard events in NAME.tb."""
        return self.open_run(_stem(checkpoint), info, tb_dir=tensorboard_dir(checkpoint), **kwargs)

    def open_run(
        self,
        name: str,
        info: dict[str, Any],
        *,
        tb_dir: str | Path,
        at_epoch: int = 0,
        history: Sequence[dict[str, Any]] = (),
        replay: bool = False,
    ) -> TrackedRun:
        """Start run `name` (`info`: its run.json) at `at_epoch`; `history`: the record's lines
        up to there. A `replay` leaves an existing TensorBoard folder alone."""
        self.opened.add(name)
        handles = []
        for tracker in self.trackers:
            if replay and tracker.name == "tensorboard" and Path(tb_dir).exists():
                continue
            args = (name, info, Path(tb_dir), at_epoch, history, self.parent.get(tracker))
            opened = tracker.call(f"starting {name}", tracker.open, *args)
            if opened is not None:
                handles.append((tracker, opened))
        return TrackedRun(name, handles)

    def group(self, name: str, values: dict[str, Any], output: Path) -> Tracking:
        """A parent run `name` with `values` as params (MLflow; TensorBoard groups by folder),
        writing the folder `output`: the returned Tracking's runs nest under it, and its
        `finish` ends it."""
        child = Tracking(warn=self.warn)
        child.trackers = self.trackers
        flat = {k: plain(v) for k, v in values.items()}
        for tracker in self.trackers:
            opened = tracker.call(f"starting {name}", tracker.open_group, name, flat, output)
            if opened is not None:
                child.parent[tracker] = opened
        return child

    def finish(self, status: str = FINISHED, artifacts: Iterable[str | Path | None] = ()) -> None:
        """End a group's own run with `status`, its `artifacts` (the files that exist) attached."""
        files = _existing(artifacts)
        for tracker, handle in self.parent.items():
            tracker.call("finishing the group", tracker.finish_group, handle, status, files)
        self.parent = {}

    def replay(self, checkpoint: str | Path) -> None:
        """Mirror a finished run from its record alone (one another rank or an earlier run trained)."""
        if not self.trackers:
            return
        from ptm_func.files.records import metrics_path, read_metrics, run_path

        try:
            info = json.loads(run_path(checkpoint).read_text(encoding="utf-8"))
            lines = read_metrics(metrics_path(checkpoint))
        except (OSError, ValueError) as err:
            self.warn(f"--track: cannot read the record of {checkpoint} ({short(err)}); it is not tracked")
            return
        # from epoch 0: the record's every line is mirrored, and the run did not resume
        run = self.mirror(checkpoint, info, at_epoch=0, history=lines, replay=True)
        run.finish(info.get("result") or {}, [checkpoint, metrics_path(checkpoint), run_path(checkpoint)])


class TrackedRun:
    """One run in every tracker: `epoch` per record line, `finish` once. Leaving a `with` block
    on an exception ends it as KILLED (Ctrl-C) or FAILED."""

    def __init__(self, name: str, handles: list[tuple[Tracker, Any]]):
        self.name, self.handles, self.done = name, handles, False

    def epoch(self, line: dict[str, Any]) -> None:
        """Log one record line (`records.epoch_line`: epoch, loss, accuracies, seconds)."""
        for tracker, handle in self.handles:
            tracker.call(f"logging epoch {line.get('epoch')} of {self.name}", tracker.epoch, handle, line)

    def finish(self, result: dict[str, Any], artifacts: Iterable[str | Path | None] = ()) -> None:
        """End the run: final accuracies from `result` (the record's), `artifacts` that exist."""
        if self.done:
            return
        self.done = True
        status, files = run_status(result), _existing(artifacts)
        for tracker, handle in self.handles:
            tracker.call(f"finishing {self.name}", tracker.finish, handle, result, status, files)

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(self, kind, err, traceback) -> None:
        if kind is not None:
            interrupted = issubclass(kind, KeyboardInterrupt)
            self.finish({"interrupted_at": "interrupted"} if interrupted else {"failed": short(err)})


def _stem(checkpoint: str | Path) -> str:
    return Path(checkpoint).name.removesuffix(".safetensors")


def _existing(paths: Iterable[str | Path | None]) -> list[Path]:
    return [Path(p) for p in paths if p is not None and Path(p).is_file()]


def _stderr(text: str) -> None:
    print(f"ptm: note: {text}", file=sys.stderr, flush=True)
