"""The tracker libraries behind `--track` (tracking.py): TensorBoard's SummaryWriter and
MLflow's client, each behind one guard that turns its first failure into one line and silence.

Each is imported when a run asks for it, never at import time (`ptm --help` stays light).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

from ptm_func.errors import TrackerUnavailable
from ptm_func.text import printable

FINISHED, KILLED, FAILED = "FINISHED", "KILLED", "FAILED"  # MLflow's names for how a run ended
EPOCH_METRICS = ("loss", "train_accuracy_running", "val_accuracy", "seconds", "samples_per_second")
FINAL_METRICS = ("train_accuracy", "val_accuracy")  # eval mode, at the end: logged as final/NAME
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # what each tracker imports
# MLflow's database stores need these (mlflow-skinny leaves them out; its default is sqlite:///mlflow.db)
DB_PACKAGES, DB_SCHEMES = ("sqlalchemy", "alembic"), ("sqlite", "postgresql", "mysql", "mssql")
# MLflow retries a failed HTTP request 7 times with growing pauses, minutes in all, which would
# stall training when its server goes away: unless you set them, one retry and a 20 s timeout.
MLFLOW_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
BATCH = 1000  # MLflow's limit of metrics per log_batch


def params(info: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """A run.json's hyperparameters as flat name -> value: what it is, the TrainConfig fields,
    and the model's options as model.NAME."""
    what = ("variant", "model", "data", "classes", "train_images", "val_images")
    flat = {k: info[k] for k in what if k in info}
    flat.update(info.get("config") or {})
    flat.update({f"model.{k}": v for k, v in (info.get("model_config") or {}).items()})
    return {k: plain(v) for k, v in flat.items()}


class Tracker:
    """One tracker library; after its first failure it says so and does nothing more."""

    name = ""

    def __init__(self, warn: Callable[[str], None]):
        self.warn, self.broken = warn, False

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args), or None once anything failed (said once, as one line)."""
        if self.broken:
            return None
        try:
            return fn(*args)
        except Exception as err:  # any failure of the library: the training matters more
            self.broken = True
            self.warn(
                f"--track {self.name}: {what} failed ({short(err)}); training goes on without "
                f"{self.name} (the .metrics.jsonl record keeps every epoch)"
            )
            with contextlib.suppress(Exception):
                self.abandon()
            return None

    def abandon(self) -> None:
        """Let go of what is open after a failure (best effort)."""

    def where(self, events: str, logdir: str) -> str:
        return self.name

    def open_group(self, name: str, values: dict[str, Any], output: Path) -> Any:
        return None

    # what each library implements: a run's handle, its epochs, its end
    def open(self, name: str, info: dict[str, Any], tb_dir: Path, at_epoch: int, history, parent) -> Any:
        raise NotImplementedError

    def epoch(self, run: Any, line: dict[str, Any]) -> None:
        raise NotImplementedError

    def finish(self, run: Any, result: Any, status: str, files: list[Path]) -> None:
        raise NotImplementedError

    def finish_group(self, handle: Any, status: str, files: list[Path]) -> None:
        pass


class _QuietWriterThreads:
    """threading.excepthook, less TensorBoard's writer threads. Such a thread keeps its exception
    (a full disk, a folder it may not write) for the thread that writes next, where the tracker
    says it in one line; Python would also print it, with a traceback, from the thread itself."""

    def __init__(self, previous: Callable[[Any], object]):
        self.previous = previous

    def __call__(self, args: Any) -> None:
        if type(args.thread).__module__.startswith("tensorboard."):
            return
        self.previous(args)

    @classmethod
    def install(cls) -> None:
        if not isinstance(threading.excepthook, cls):
            threading.excepthook = cls(threading.excepthook)


class _TensorBoardRun:  # a writer and what finish needs
    def __init__(self, writer, hparams: dict[str, Any], lr: float | None):
        self.writer, self.hparams, self.lr, self.last = writer, hparams, lr, 0


class _TensorBoard(Tracker):
    """torch.utils.tensorboard's SummaryWriter: a folder of event files per run."""

    name = "tensorboard"

    def __init__(self, warn):
        super().__init__(warn)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise TrackerUnavailable(needs(self.name, f"a working tensorboard ({short(err)})")) from None
        self.writer_class = SummaryWriter
        self.writers: list[Any] = []
        _QuietWriterThreads.install()

    def where(self, events: str, logdir: str) -> str:
        return f"tensorboard ({events}; view: tensorboard --logdir {logdir})"

    def open(self, name, info, tb_dir: Path, at_epoch: int, history, parent) -> _TensorBoardRun:
        # a folder with events already: those from epoch at_epoch + 1 on are hidden (purged)
        existed = tb_dir.exists()
        writer = self.writer_class(str(tb_dir), purge_step=at_epoch + 1 if existed else None)
        self.writers.append(writer)
        run = _TensorBoardRun(writer, params(info), _lr(info))
        if not existed:  # a new folder of a resumed run gets the record's earlier epochs too
            for line in history:
                self.epoch(run, line)
        return run

    def epoch(self, run: _TensorBoardRun, line: dict[str, Any]) -> None:
        step = int(line["epoch"])
        for key in EPOCH_METRICS:
            if number(line.get(key)):
                run.writer.add_scalar(key, line[key], step)
        if run.lr is not None:
            run.writer.add_scalar("lr", run.lr, step)
        run.writer.flush()  # on disk per epoch, as the record: a killed run keeps them
        run.last = step

    def finish(self, run: _TensorBoardRun, result, status: str, files) -> None:
        if status != KILLED:  # an interrupted run's hyperparameters come when it finishes
            final = {f"final/{k}": float(result[k]) for k in FINAL_METRICS if number(result.get(k))}
            # run_name ".": into the run's own folder, not a timestamped one beside it
            run.writer.add_hparams(run.hparams, final, run_name=".", global_step=run.last)
        run.writer.close()
        self.writers.remove(run.writer)

    def abandon(self) -> None:
        for writer in self.writers:
            with contextlib.suppress(Exception):
                writer.close()
        self.writers = []


class _MLflowRun:  # a run id and what its metrics need
    def __init__(self, run_id: str, lr: float | None):
        self.run_id, self.lr, self.last = run_id, lr, 0


class _MLflow(Tracker):
    """MlflowClient on MLflow's tracking URI (MLFLOW_TRACKING_URI or its default), in the
    experiment MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID names, else its default one."""

    name = "mlflow"

    def __init__(self, warn):
        super().__init__(warn)
        try:
            import mlflow
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise TrackerUnavailable(needs(self.name, f"a working mlflow ({short(err)})")) from None
        # its store's INFO lines ("Creating initial MLflow database tables...") are not ptm's news
        logging.getLogger("mlflow").setLevel(
            max(logging.getLogger("mlflow").getEffectiveLevel(), logging.WARNING)
        )
        self.uri = mlflow.get_tracking_uri()
        scheme = urllib.parse.urlparse(self.uri).scheme.split("+")[0]
        missing = [m for m in DB_PACKAGES if not installed(m)] if scheme in DB_SCHEMES else []
        if missing:
            raise TrackerUnavailable(needs(self.name, f"{' and '.join(missing)} for its store {self.uri}"))
        self.client_class, self.metric, self.param = MlflowClient, Metric, Param
        self.client: Any = None
        self.experiment = "0"
        self.running: set[str] = set()  # run ids to end as KILLED if the process ends first
        if scheme in ("http", "https"):
            for key, value in MLFLOW_HTTP.items():
                os.environ.setdefault(key, value)
            self.call(f"reaching {self.uri}", _reach, self.uri)
        if scheme == "sqlite":
            self.call(f"opening {self.uri}", _open_sqlite, self.uri)
        atexit.register(self._end_running)

    def where(self, events: str, logdir: str) -> str:
        return f"mlflow ({self.uri}; view: mlflow ui)"

    def _client(self):
        if self.client is None:
            client = self.client_class(self.uri)
            self.experiment = _experiment(client)
            self.client = client
        return self.client

    def _start(self, name: str, values: dict[str, Any], tags: dict[str, str]) -> str:
        client = self._client()
        self._end_orphans(tags[OUTPUT_TAG])
        run_id = client.create_run(self.experiment, run_name=name, tags=tags).info.run_id
        self.running.add(run_id)
        plain = [self.param(k, str(v)[:6000]) for k, v in values.items()]
        for i in range(0, len(plain), 100):  # MLflow takes 100 params a batch
            client.log_batch(run_id, params=plain[i : i + 100])
        return run_id

    def _end_orphans(self, output: str) -> None:
        """End as KILLED the runs of `output` still RUNNING: a process killed with -9 could not
        end them, and the lock this process holds on `output` says no other one is writing it."""
        # a quote cannot be written in MLflow's filter strings: LIKE with `_` there, then exact
        pattern = output.replace("'", "_")
        found = self.client.search_runs(
            [self.experiment],
            filter_string=f"tags.`{OUTPUT_TAG}` LIKE '{pattern}' and attributes.status = 'RUNNING'",
        )
        for run in found:
            if run.data.tags.get(OUTPUT_TAG) == output:  # LIKE's `_` and `%` match more
                self.client.set_terminated(run.info.run_id, KILLED)

    def open_group(self, name: str, values: dict[str, Any], output: Path) -> str:
        return self._start(name, values, {"ptm.kind": "group", OUTPUT_TAG: str(output.resolve())})

    def open(self, name, info, tb_dir, at_epoch: int, history, parent) -> _MLflowRun:
        tags = {"ptm.variant": str(info.get("variant", "")), OUTPUT_TAG: str(Path(tb_dir).resolve())}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        if at_epoch:
            tags["ptm.resumed_at_epoch"] = str(at_epoch)
        run = _MLflowRun(self._start(name, params(info), tags), _lr(info))
        self._log(run, [m for line in history for m in self._metrics(run, line)])
        return run

    def _metrics(self, run: _MLflowRun, line: dict[str, Any]) -> list:
        step, now = int(line["epoch"]), int(time.time() * 1000)
        run.last = step
        values = {k: line[k] for k in EPOCH_METRICS if number(line.get(k))}
        if run.lr is not None:
            values["lr"] = run.lr
        return [self.metric(k, float(v), now, step) for k, v in values.items()]

    def _log(self, run: _MLflowRun, metrics: list) -> None:
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(run.run_id, metrics=metrics[i : i + BATCH])

    def epoch(self, run: _MLflowRun, line: dict[str, Any]) -> None:
        self._log(run, self._metrics(run, line))

    def finish(self, run: _MLflowRun, result, status: str, files) -> None:
        now = int(time.time() * 1000)
        final = [
            self.metric(f"final/{k}", float(result[k]), now, run.last)
            for k in FINAL_METRICS
            if number(result.get(k))
        ]
        self._end(run.run_id, status, files, final)

    def finish_group(self, handle: str, status: str, files) -> None:
        self._end(handle, status, files, [])  # the group's MLflow run id (open_group)

    def _end(self, run_id: str, status: str, files: list[Path], metrics: list) -> None:
        client = self.client
        try:
            if metrics:
                client.log_batch(run_id, metrics=metrics)
            for path in files:
                client.log_artifact(run_id, str(path))
        except Exception:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, FAILED)
            self.running.discard(run_id)
            raise
        client.set_terminated(run_id, status)
        self.running.discard(run_id)

    def _end_running(self) -> None:
        """At exit: the runs a second Ctrl-C or an error left open end as KILLED."""
        if self.broken or self.client is None:
            return
        for run_id in list(self.running):
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, KILLED)
        self.running.clear()


OUTPUT_TAG = "ptm.output"  # an MLflow run's files: a run's NAME.tb path, a sweep's folder


KINDS: dict[str, type[Tracker]] = {"tensorboard": _TensorBoard, "mlflow": _MLflow}


def _experiment(client) -> str:
    """The experiment MLflow's own run API would use: MLFLOW_EXPERIMENT_NAME (made if new),
    MLFLOW_EXPERIMENT_ID, else the default experiment."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        found = client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else client.create_experiment(name)
    return os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"


def _reach(uri: str) -> None:
    """Connect to the tracking server once (5 s at most), so one that is down costs no retries."""
    parts = urllib.parse.urlparse(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname, port), timeout=5):
        pass


def _open_sqlite(uri: str) -> None:
    """Open the sqlite store once and take its write lock (then let go): a folder that is missing,
    read-only or a file is one line now, not MLflow's minutes of retried operations later."""
    import sqlite3

    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    if path in ("", ":memory:"):
        return
    connection = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=rwc", uri=True, timeout=5)
    try:
        connection.execute("BEGIN IMMEDIATE")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        connection.execute(f"PRAGMA user_version = {int(version)}")  # a write: the folder must take a journal
        connection.rollback()
    finally:
        connection.close()


def needs(name: str, what: str) -> str:
    """The one line that says what --track NAME lacks and what to install."""
    return f"--track {name} needs {what}: pip install 'ptm_func[{name}]'"


def installed(module: str) -> bool:
    """Is `module` importable? (found, not imported)"""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _lr(info: dict[str, Any]) -> float | None:
    lr = (info.get("config") or {}).get("lr")
    return float(lr) if number(lr) else None


def number(value: Any) -> TypeGuard[int | float]:
    """Is `value` a finite int or float (not a bool)?"""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plain(value: Any) -> str | int | float | bool:
    """A param value trackers take: numbers and bools as they are, lists joined, the rest as text."""
    if isinstance(value, bool) or number(value) or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def short(err: BaseException | None) -> str:
    """An exception as one short line (library messages can run to pages)."""
    text = str(err).strip().splitlines()[0] if err is not None and str(err).strip() else ""
    text = text or type(err).__name__
    return printable(text if len(text) <= 200 else text[:197] + "...")
