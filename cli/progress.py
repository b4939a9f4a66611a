"""Training progress: a live bar on a terminal, and one plain line per epoch always."""

from __future__ import annotations

import contextlib
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ptm_func.training.state import EpochStats


def epoch_line(stats: EpochStats) -> str:
    """`epoch   3/20  loss 0.4877  train-acc 0.784  val-acc 0.799  2.44s  4,092 img/s` (K members: means)."""
    val = f"  val-acc {stats.val_accuracy:.3f}" if stats.val_accuracy is not None else ""
    return (
        f"epoch {stats.epoch:>3}/{stats.epochs}  loss {stats.loss:.4f}  "
        f"train-acc {stats.train_accuracy_running:.3f}{val}  {stats.seconds:.2f}s  "
        f"{stats.samples_per_second:,.0f} img/s"
    )


class TrainingProgress:
    """Feeds fit's on_step/on_epoch; the bar shows only when stderr is a terminal."""

    def __init__(self, epochs: int, first_epoch: int = 0):
        self.console = Console(stderr=True)
        self.live = sys.stderr.isatty()
        self.epochs = epochs
        self.epoch = first_epoch
        self._progress = None
        self._task = None

    @contextlib.contextmanager
    def running(self):
        if not self.live:
            yield self
            return
        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with self._progress:
            self._task = self._progress.add_task(
                "train",
                total=None,
                epoch=self.epoch + 1,
                epochs=self.epochs,
                last="first epoch (compiles the step if compiling)",
            )
            yield self
        self._progress = None

    def on_step(self, step: int, n_steps: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, total=n_steps, epoch=self.epoch + 1)

    def on_epoch(self, stats: EpochStats) -> None:
        self.epoch = stats.epoch
        line = epoch_line(stats)
        if self._progress is not None:
            self._progress.console.print(line, highlight=False)
            self._progress.update(
                self._task,
                completed=0,
                last=f"last: loss {stats.loss:.4f}, {stats.samples_per_second:,.0f} img/s",
            )
        else:
            print(line, file=sys.stderr, flush=True)
