"""Files written whole or not at all: a temp file beside the target, fsync, one rename.

Temp files are named `.NAME.tmpPID` (probes `.NAME.probePID`), so the ones a killed process
left behind can be found and removed. Everything written follows the user's umask.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path


class WriteError(ValueError):
    """A file cannot be written where it was asked for; the message says which and why."""


def write_temp(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temp)` for a temp file beside `path`, fsync it; return it (not yet renamed).

    On failure the temp file is removed and the error propagates.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # some writers (safetensors) create files 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        discard(tmp)
        raise
    return tmp


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write `path` through `write(temp)` and one rename: readers see the old file or the new one."""
    path = Path(path)
    tmp = write_temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def reason(err: BaseException) -> str:
    """An OSError's reason without the temp file's name in it ('No space left on device')."""
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def check_writable(path: str | Path, size: int = 0) -> None:
    """Fail now, not after hours of training, if `size` bytes cannot be written at `path`.

    The probe writes and fsyncs `size` bytes: an empty probe succeeds on a full disk.
    """
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{path} is a folder; give the path of a file")
    probe = path.with_name(f".{path.name}.probe{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            chunk = bytes(min(size, 1 << 20))
            for start in range(0, size, len(chunk) or 1):
                f.write(chunk[: size - start])
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise WriteError(f"cannot write {path}: {reason(err)}") from None
    finally:
        discard(probe)


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete temp files and probes that dead processes left beside the run at `path`."""
    path = Path(path)
    stem = path.name.removesuffix(".safetensors")
    removed = []
    with contextlib.suppress(OSError):
        for candidate in path.parent.glob(f".{glob_escape(stem)}*"):
            found = re.search(r"\.(?:tmp|probe)(\d+)$", candidate.name)
            if found and int(found.group(1)) != os.getpid() and not _alive(int(found.group(1))):
                discard(candidate)
                removed.append(candidate)
    return removed


def temp_files(path: Path) -> list[Path]:
    """The temp files of `path` (whoever wrote them), oldest name first."""
    return sorted(path.parent.glob(f".{glob_escape(path.name)}.tmp*"))


def discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists and is not ours
    return True
