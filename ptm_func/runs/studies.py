"""Optuna studies for `ptm tune`: storages, samplers, pruners, and workers that share a study.

A study lives in Optuna's storage; ptm's files only point at it. The default storage is a
journal file (Optuna's JournalFileBackend: several processes on one machine); a database URL
(postgresql://, mysql://) is for several machines. Trials are asked and told (Optuna's batch
ask-and-tell): a worker claims up to K trials at once, never more than the study's budget, and
marks the trials of dead workers failed, enqueueing their settings again.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ptm_func.errors import SettingsError, StudyStorageError
from ptm_func.nets import rng

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid")
PRUNERS = ("halving", "hyperband", "median", "none")
HEARTBEAT_SECONDS = 10  # a database study: each running trial's heartbeat
GRACE_SECONDS = 30  # ... and how long a silent one lives on before it is failed (PTM_TUNE_GRACE)
UNCLAIMED_SECONDS = 120  # a running trial without its worker's name (killed while asking)
COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")  # the trials the budget counts


def optuna():
    """Optuna, imported when a study is used (`pip install optuna`: the tune extra)."""
    try:
        import optuna as module
    except ImportError:
        raise SettingsError("ptm tune needs Optuna: pip install 'ptm_func[tune]'") from None
    module.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=module.exceptions.ExperimentalWarning)
    # ptm's ask-and-tell driver records the heartbeats itself (heartbeats() below)
    warnings.filterwarnings(
        "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
    )
    return module


def safe_url(url: str) -> str:
    """A storage URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str | None, default: Path, must_exist: bool = False) -> Any:
    """The study's storage: a journal file (None: `default`; a path), or a database URL.

    A database that cannot be reached or refuses the login raises SettingsError (one line)."""
    op = optuna()
    if url is None or "://" not in url:
        path = Path(url) if url else default
        if path.is_dir():
            raise SettingsError(f"--storage {path} is a folder; give a journal file or a database URL")
        if path.exists() and not path.is_file():
            raise SettingsError(
                f"--storage {path} is not a regular file; give a journal file or a database URL"
            )
        if must_exist and not path.exists():
            raise SettingsError(f"no study storage at {path} (give --storage where the study lives)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            import optuna.storages.journal as journal

            backend = journal.JournalFileBackend(str(path), lock_obj=journal.JournalFileOpenLock(str(path)))
            return journal.JournalStorage(backend)
        except (NotADirectoryError, FileExistsError):
            raise StudyStorageError(
                f"cannot use {path} as a study journal: a parent is not a folder"
            ) from None
        except OSError as err:
            raise StudyStorageError(f"cannot use {path} as a study journal: {err.strerror or err}") from None
    if url.rstrip("/") in ("sqlite:", "sqlite:/") or url == "sqlite://":
        raise SettingsError(
            "--storage sqlite:// keeps the study in memory, lost at exit; give a file or a server"
        )
    engine = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    grace = grace_seconds()
    try:
        return op.storages.RDBStorage(
            _driver(url),
            engine_kwargs=engine,
            heartbeat_interval=beat_seconds(),
            grace_period=grace,
            heartbeat_stale_trial_callback=lambda study, trial: _retry(study, trial),
        )
    except Exception as err:  # sqlalchemy's OperationalError, ArgumentError, a missing driver
        why = _first_line(err)
        raise StudyStorageError(f"cannot open the study storage {safe_url(url)}: {why}") from None


def grace_seconds() -> int:
    """How long a database trial's heartbeat may be silent before the trial is failed: 30 s,
    or $PTM_TUNE_GRACE (whole seconds, at least 2)."""
    text = os.environ.get("PTM_TUNE_GRACE", "").strip()
    if not text:
        return GRACE_SECONDS
    if not text.isdigit() or not 2 <= int(text) <= 86400:
        raise SettingsError(f"PTM_TUNE_GRACE must be whole seconds in 2..86400, got {text[:40]!r}")
    return int(text)


def beat_seconds() -> int:
    """A running trial's heartbeat period: a third of the grace, at most HEARTBEAT_SECONDS."""
    return min(HEARTBEAT_SECONDS, max(grace_seconds() // 3, 1))


def open_study(name: str, url: str | None, default: Path, sampler: Any, pruner: Any, tries: int = 5) -> Any:
    """Create study `name` (maximising), or load it. Workers that start together race to create
    the tables and the study: the loser of such a race tries again."""
    op = optuna()
    for attempt in range(tries):
        try:
            storage = open_storage(url, default)
            return op.create_study(
                study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                sampler=sampler, pruner=pruner,
            )  # fmt: skip
        except SettingsError:
            raise
        except ValueError as err:  # a journal line that is not JSON: a write cut short, an edit
            where = url or str(default)
            raise StudyStorageError(f"cannot read the study storage {safe_url(where)}: {err}") from None
        except (StudyStorageError, op.exceptions.StorageInternalError) as err:
            if attempt + 1 == tries or not _a_race(err):
                if isinstance(err, StudyStorageError):
                    raise
                raise StudyStorageError(f"cannot create study {name!r}: {_first_line(err)}") from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _a_race(err: BaseException) -> bool:
    """Did another worker create the same table or study at the same moment?"""
    text = str(err).lower() + str(getattr(err, "__cause__", "") or "").lower()
    return any(word in text for word in ("duplicate key", "unique constraint", "already exists", "commit"))


def _driver(url: str) -> str:
    """postgresql://... through psycopg 3 (the tune extra) where psycopg2 is not installed."""
    if not url.startswith("postgresql://"):
        return url
    try:
        import psycopg2  # noqa: F401  # pyright: ignore[reportMissingModuleSource]
    except ImportError:
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    text = lines[0] if lines else type(orig).__name__
    return re.sub(r"\(Background on this error.*", "", text)[:300]


def make_sampler(name: str, seed: int, grid: dict[str, list] | None = None) -> Any:
    """Optuna's sampler `name` with `seed`."""
    op = optuna()
    if name == "tpe":
        return op.samplers.TPESampler(seed=seed)
    if name == "random":
        return op.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        _needs("cmaes", "--sampler cmaes")
        return op.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        _needs("scipy", "--sampler qmc")
        return op.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        return _grid_sampler(op)(grid or {}, seed=seed)
    raise SettingsError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def _grid_sampler(op: Any) -> type:
    """Optuna's GridSampler without its stop at the last grid point: study.stop() works only
    inside study.optimize, and the budget (--trials, at most the grid) ends an ask-and-tell study."""

    class Grid(op.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return Grid


# samplers whose draws follow the trial number: a worker seeds them again for each trial
RESEEDED = ("tpe", "random")


def _needs(module: str, option: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise SettingsError(f"{option} needs {module}: pip install {module}") from None


def make_pruner(name: str, epochs: int, min_epochs: int) -> Any:
    """Optuna's pruner `name`, with epochs as the resource (set explicitly, as parallel
    workers need: optuna#3088)."""
    op = optuna()
    if name == "halving":
        return op.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=3)
    if name == "hyperband":
        return op.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return op.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=min_epochs - 1)
    if name == "none":
        return op.pruners.NopPruner()
    raise SettingsError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial `number`: deterministic, and distinct for each trial, so
    workers that ask at once do not draw the same settings."""
    return int(rng.fold_in(seed, number)) % (2**32)


# --- the workers of one study -------------------------------------------------------------


def this_worker() -> dict[str, Any]:
    """What marks a trial as this process's: host, pid and the pid's start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _start_time(os.getpid())}


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(attrs: dict[str, Any]) -> bool | None:
    """Is the worker a trial names alive? None: not on this host (its heartbeat tells)."""
    if attrs.get("host") != socket.gethostname() or not isinstance(attrs.get("pid"), int):
        return None
    pid = attrs["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = attrs.get("pid_start")
    return started is None or _start_time(pid) in (None, started)


def reap_dead(study: Any, report=None) -> list[int]:
    """Fail the running trials whose worker died and enqueue their settings again.

    A worker on this host is checked by pid; one elsewhere by its heartbeat (a database
    study: Optuna's fail_stale_trials, whose callback retries). Only the worker whose change
    of the trial's state wins enqueues the retry, so no settings run twice.
    """
    op = optuna()
    states = op.trial.TrialState
    running = {t.number for t in study.get_trials(deepcopy=False, states=(states.RUNNING,))}
    op.storages.fail_stale_trials(study)  # its callback enqueues the retry (open_storage)
    if report is not None and running and uses_heartbeats(study):
        for trial in study.get_trials(deepcopy=False, states=(states.FAIL,)):
            if trial.number in running:
                report(f"trial {trial.number}'s heartbeat stopped; its settings are tried again")
    failed = []
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        attrs = trial.user_attrs
        dead = alive(attrs) is False
        if "host" not in attrs and trial.datetime_start is not None:
            dead = (now - trial.datetime_start).total_seconds() > UNCLAIMED_SECONDS
        if not dead:
            continue
        with contextlib.suppress(op.exceptions.UpdateFinishedTrialError):
            if study._storage.set_trial_state_values(trial._trial_id, state=states.FAIL):
                failed.append(trial.number)
                _retry(study, trial)
                if report is not None:
                    pid = attrs.get("pid")
                    report(f"trial {trial.number}'s worker (pid {pid}) died; its settings are tried again")
    return failed


def _retry(study: Any, trial: Any) -> None:
    """Enqueue a dead worker's trial settings again (by the worker that failed the trial)."""
    study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number}, skip_if_exists=False)


def counted(study: Any) -> list[Any]:
    """The trials the budget counts: finished (complete, pruned), running and waiting."""
    states = optuna().trial.TrialState
    return study.get_trials(deepcopy=False, states=tuple(getattr(states, s) for s in COUNTED))


def finished(study: Any) -> list[Any]:
    states = optuna().trial.TrialState
    return study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))


def claim(study: Any, want: int, budget: int) -> list[Any]:
    """Ask up to `want` trials, within the study's `budget` of counted trials.

    Two workers asking at once may both pass the count: a trial whose place among the
    counted ones is past the budget is failed at once (marked `ended: surplus`)."""
    op = optuna()
    states = op.trial.TrialState
    trials = []
    for _ in range(want):
        counted_now = counted(study)
        waiting = any(t.state == states.WAITING for t in counted_now)
        if len(counted_now) >= budget and not waiting:
            break
        trial = study.ask()
        for key, value in this_worker().items():  # host last: until it is set, the trial is unclaimed
            if key != "host":
                trial.set_user_attr(key, value)
        trial.set_user_attr("host", socket.gethostname())
        if uses_heartbeats(study):
            study._storage.record_heartbeat(trial._trial_id)
        numbers = sorted(t.number for t in counted(study))
        if trial.number in numbers and numbers.index(trial.number) >= budget:
            trial.set_user_attr("ended", "surplus: the study had its trials")
            study.tell(trial, state=states.FAIL)
            break
        trials.append(trial)
    return trials


def uses_heartbeats(study: Any) -> bool:
    """Do the study's trials keep a heartbeat (database storages, which Optuna wraps in a cache)?"""
    storage = study._storage
    return hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval() is not None


@contextlib.contextmanager
def heartbeats(study: Any, trials: Sequence[Any]) -> Iterator[None]:
    """Record the trials' heartbeats while they train (database storages)."""
    storage = study._storage
    if not trials or not uses_heartbeats(study):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(beat_seconds()):
            for trial in trials:
                with contextlib.suppress(Exception):  # a finished trial, a lost connection
                    storage.record_heartbeat(trial._trial_id)

    thread = threading.Thread(target=beat, name="ptm-tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
