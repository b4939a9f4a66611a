"""`--nproc N`: start N local workers through torch.distributed's launcher (what torchrun uses).

Every worker runs the same command in a world of N ranks (RANK, WORLD_SIZE, LOCAL_RANK set
as torchrun sets them); rank 0 prints and writes, the others print errors only.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ptm_func.text import printable

if TYPE_CHECKING:
    from ptm_func.training.distributed import World

from .errors import UsageError

ERRORS_DIR = "PTM_RANK_ERRORS"  # where --nproc's workers note their errors


def run_workers(nproc: int, entry: Callable[[dict[str, Any]], None], kwargs: dict[str, Any]) -> int:
    """Run entry(kwargs) in `nproc` local worker processes; the exit code for the command."""
    errors = tempfile.mkdtemp(prefix="ptm-rank-errors-")
    workers_env = {
        ERRORS_DIR: errors,  # the workers note their errors there (see quiet_unless_main)
        "PYTHONWARNINGS": "ignore:resource_tracker:UserWarning",  # a killed worker's semaphores
    }
    before = {name: os.environ.get(name) for name in workers_env}
    os.environ.update(workers_env)  # spawned workers inherit it
    try:
        return _launch(nproc, entry, kwargs, Path(errors))
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(errors, ignore_errors=True)


def _launch(nproc: int, entry, kwargs: dict[str, Any], errors: Path) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    quiet = ("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing")
    for name in [*quiet, *logging.root.manager.loggerDict]:  # each has its own level: set them all
        if name.startswith(quiet):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"ptm-{uuid.uuid4()}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port, as torchrun --standalone
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    try:
        elastic_launch(config, entrypoint=entry)(kwargs)
    except SignalException as err:  # the workers were told too; rank 0 saved and said so
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        killed = {rank: f.exitcode for rank, f in err.failures.items() if f.exitcode < 0}
        for rank, code in sorted(killed.items()):
            name = signal.Signals(-code).name
            typer.echo(f"ptm: error: worker rank {rank} was killed by {name}; the run stopped", err=True)
        if killed:
            return 1
        _say_errors_once(errors)
        return err.get_first_failure()[1].exitcode  # the rank said why (an error; 130/143 when stopped)
    return 0


def _say_errors_once(errors: Path) -> None:
    """Rank 0 printed its error; if it had none, say the first other rank's (ranks > 0 print nothing)."""
    said = {int(f.stem.removeprefix("rank")): f.read_text(encoding="utf-8") for f in errors.glob("rank*.txt")}
    if said.get(0):
        return
    for rank, text in sorted(said.items()):
        if text:
            for line in text.splitlines():
                typer.echo(f"ptm: error: (rank {rank}) {line.removeprefix('ptm: error: ')}", err=True)
            return


def world_or_launch(nproc: int, device: str) -> World | None:
    """The world this process runs in (printing only errors unless rank 0), after checking
    --nproc; with --nproc > 1 outside a world, the caller should start the workers."""
    from ptm_func.training.distributed import from_environment

    world = from_environment()
    if world is not None:
        quiet_unless_main(world.rank)
    if nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and world is not None:
        raise UsageError("--nproc starts its own workers: not inside torchrun")
    if nproc > 1:
        _check_workers_fit(nproc, device)
    return world


def _check_workers_fit(nproc: int, device: str) -> None:
    """A worker per CPU (gloo) or per visible GPU (NCCL), at most."""
    import torch

    from ptm_func.training.devices import resolve_device
    from ptm_func.training.limits import cpu_count

    if resolve_device(device).type == "cuda":
        have, what = torch.cuda.device_count(), "visible GPUs"
    else:
        have, what = cpu_count(), "CPUs"
    if nproc > have:
        raise UsageError(f"--nproc {nproc} is more workers than the {have} {what} here; give at most {have}")


def run_as_worker(command: Callable[..., Any], arguments: dict[str, Any]) -> None:
    """Run a ptm command in a worker; a non-zero exit makes the launcher stop the other ranks."""
    try:
        command(**arguments)
    except typer.Exit as done:
        if done.exit_code:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.exit_code)  # skip the launcher's own reporting: the rank said why


class ErrorsOnly(io.TextIOBase):
    """A rank's stderr: its `ptm: error:` lines are noted in `log` (the launcher says them once);
    rank 0 prints everything, ranks > 0 print nothing (or, under torchrun, their errors, marked)."""

    def __init__(self, stream, rank: int, log: Path | None):
        self.stream, self.rank, self.log, self.pending = stream, rank, log, ""

    def write(self, text: str) -> int:
        if self.rank == 0:
            self.stream.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in (line for line in lines if line.startswith("ptm: error:")):
            if self.log is not None:
                with self.log.open("a", encoding="utf-8") as log:
                    log.write(line + "\n")
            elif self.rank > 0:
                self.stream.write(
                    f"ptm: error: (rank {self.rank}) {printable(line.removeprefix('ptm: error: '))}\n"
                )
                self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def writable(self) -> bool:
        return True


def quiet_unless_main(rank: int) -> None:
    """Rank 0 speaks for the run; ranks > 0 print nothing. Under --nproc every rank notes its
    errors for the launcher, which says them once."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found"
    folder = os.environ.get(ERRORS_DIR)
    log = Path(folder) / f"rank{rank}.txt" if folder else None
    if rank > 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the worker
    if rank > 0 or log is not None:
        sys.stderr = ErrorsOnly(sys.stderr, rank, log)
