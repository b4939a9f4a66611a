"""One process at a time per output: a run's checkpoint, or a sweep's folder.

    with owned(Path("runs/net-seed123.safetensors")):   # runs/net-seed123.lock, held
        ...train, record, save...

The lock is an OS file lock (the `filelock` package, flock on Linux): the kernel drops it when
its process ends, however it ends, so a run killed with -9 never blocks the next one (its lock
file stays behind, naming a holder that is gone, and is taken over). While held, the file names
its holder, which is what a second process is told; a clean release removes it (filelock 4
refuses a lock on a file unlinked under it, so no two processes can hold two files of one name).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from ptm_func.errors import CheckpointError, OutputInUse
from ptm_func.files import atomic

SWEEP_LOCK = "sweep.lock"
SPEC_NAME = "sweep.json"  # a sweep folder's description (runs/sweep.py)


def lock_path(output: Path) -> Path:
    """runs/net.safetensors -> runs/net.lock; runs/compare.json -> runs/compare.lock (a
    comparison's table and events; its chart is another output); a sweep's folder -> FOLDER/sweep.lock"""
    if output.suffix in (".safetensors", ".json"):
        lock = output.with_name(output.name.removesuffix(output.suffix) + ".lock")
        # a file named sweep.* beside a sweep's lock: another name, or it would hold itself out
        return lock.with_name(output.name + ".lock") if lock.name == SWEEP_LOCK else lock
    return output / SWEEP_LOCK


def holder(lock: Path, wait: float = 1.0) -> str:
    """Who holds `lock`, as its holder wrote it: `pid 4242 on HOST (ptm train net), since 10:31:05`.

    A holder writes this just after it takes the lock, so a process that lost the race by a
    moment may find the file empty: it looks again for up to `wait` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            facts = json.loads(lock.read_text(encoding="utf-8"))
            since = time.strftime("%H:%M:%S", time.localtime(float(facts["since"])))
            return f"pid {int(facts['pid'])} on {facts['host']} ({facts['command']}), since {since}"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "another process"
            time.sleep(0.02)


@contextlib.contextmanager
def owned(output: Path, option: str = "--out") -> Iterator[Path]:
    """Hold `output` for this process; OutputInUse (naming the holder) if another holds it.

    A checkpoint in a sweep's folder holds the folder too: the sweep writes its members. A
    folder is a sweep's from the moment its lock is taken (sweep.lock), not only once it is
    described (sweep.json, written after the data loads). It is looked at again once the
    checkpoint is held: a sweep that took the folder in between either sees this checkpoint's
    lock file (and refuses a folder holding files) or is seen here.
    """
    with contextlib.ExitStack() as held:
        checkpoint = output.suffix == ".safetensors"
        folder_held = checkpoint and _is_sweep_folder(output.parent)
        if folder_held:
            held.enter_context(owned(output.parent))
        lock = _take(output)
        if lock is None:
            raise OutputInUse(
                f"{output} is being written by {holder(lock_path(output))}; "
                f"wait for it to finish, or give another {option}"
            )
        held.callback(_release, lock, output)
        if checkpoint and not folder_held and _is_sweep_folder(output.parent):
            held.enter_context(owned(output.parent))
        yield output


def _is_sweep_folder(folder: Path) -> bool:
    """Is `folder` a sweep's, or being made one (its lock taken, its description not yet written)?"""
    return (folder / SPEC_NAME).exists() or (folder / SWEEP_LOCK).exists()


@contextlib.contextmanager
def first_free(candidates: Iterator[Path], taken: Callable[[Path], bool]) -> Iterator[Path]:
    """Hold the first candidate that is not `taken` and no other process holds (default names
    for new runs: two runs started at once get net-seed123 and net-seed123-2)."""
    for candidate in candidates:
        if taken(candidate):
            continue
        lock = _take(candidate)
        if lock is None:
            continue
        if taken(candidate):  # a run took it between the look and the lock
            _release(lock, candidate)
            continue
        try:
            with contextlib.ExitStack() as held:
                if candidate.suffix == ".safetensors" and _is_sweep_folder(candidate.parent):
                    held.enter_context(owned(candidate.parent))  # OutputInUse while a sweep holds it
                yield candidate
        finally:
            _release(lock, candidate)
        return


def _first_non_folder(folder: Path) -> str | None:
    """'X is a file' for the first part of `folder` that exists and is not a folder."""
    for part in [*reversed(folder.parents), folder]:
        if part.exists() and not part.is_dir():
            return f"{part} is a file, not a folder"
    return None


def _release(lock: FileLock, output: Path) -> None:
    """Remove the lock file, then let go of it."""
    lock_path(output).unlink(missing_ok=True)
    lock.release()


def _take(output: Path) -> FileLock | None:
    """The held lock of `output`, or None if another process holds it."""
    path = lock_path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(
            f"cannot write {output}: {_first_non_folder(path.parent) or atomic.reason(err)}"
        ) from None
    if not os.access(path.parent, os.W_OK):
        raise CheckpointError(f"cannot write {output}: {path.parent} is not writable")
    try:
        lock = FileLock(str(path), timeout=0)
        lock.acquire()
    except Timeout:
        return None
    except OSError as err:
        raise CheckpointError(f"cannot lock {path}: {atomic.reason(err)}") from None
    facts = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200],
        "since": time.time(),
    }
    try:
        path.write_text(json.dumps(facts) + "\n", encoding="utf-8")
    except OSError:
        pass  # the lock holds without its note
    return lock
