"""Training progress for the terminal: a live bar on a TTY, and one plain line per epoch always."""

from __future__ import annotations

import contextlib
import sys

import typer

from ptm_func.runs.reporter import Reporter, epoch_line


class TrainingProgress(Reporter):
    """The CLI's Reporter: messages on stderr; a live bar only when stderr is a terminal."""

    def __init__(self):
        self.live = sys.stderr.isatty()
        self.epoch_number = 0
        self._progress = None
        self._task = None

    def message(self, text: str) -> None:
        typer.echo(text, err=True)

    @contextlib.contextmanager
    def running(self, epochs: int, first_epoch: int = 0):
        self.epoch_number = first_epoch
        if not self.live:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        with self._progress:
            self._task = self._progress.add_task(
                "train",
                total=None,
                epoch=first_epoch + 1,
                epochs=epochs,
                last="first epoch (compiles the step if compiling)",
            )
            yield self
        self._progress = None

    def step(self, step: int, n_steps: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step, total=n_steps, epoch=self.epoch_number + 1)

    def epoch(self, stats) -> None:
        self.epoch_number = stats.epoch
        line = epoch_line(stats)
        if self._progress is not None:
            self._progress.console.print(line, highlight=False)
            if self._task is not None:
                self._progress.update(
                    self._task,
                    completed=0,
                    last=f"last: loss {stats.loss:.4f}, {stats.samples_per_second:,.0f} img/s",
                )
        else:
            print(line, file=sys.stderr, flush=True)
