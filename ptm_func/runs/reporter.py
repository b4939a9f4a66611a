"""How a run reports what it does: lines on stderr by default, nothing with `Silent`.

`run_training` and `run_sweep` call a Reporter; the CLI's subclass adds a live progress bar.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ptm_func.training.state import EpochStats


def epoch_line(stats: EpochStats) -> str:
    """`epoch   3/20  loss 0.4877  train-acc 0.784  val-acc 0.799  2.44s  4,092 img/s` (K members: means)."""
    val = f"  val-acc {stats.val_accuracy:.3f}" if stats.val_accuracy is not None else ""
    return (
        f"epoch {stats.epoch:>3}/{stats.epochs}  loss {stats.loss:.4f}  "
        f"train-acc {stats.train_accuracy_running:.3f}{val}  {stats.seconds:.2f}s  "
        f"{stats.samples_per_second:,.0f} img/s"
    )


class Reporter:
    """Says what a run does: each message, note and finished epoch as one line on stderr."""

    def message(self, text: str) -> None:
        """One line for the user (progress, not a result)."""
        print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """Something the user should know that is not an error."""
        self.message(f"ptm: note: {text}")

    def epoch(self, stats: EpochStats) -> None:
        """An epoch finished."""
        self.message(epoch_line(stats))

    def step(self, step: int, n_steps: int) -> None:
        """A train step finished (`step` of the epoch's `n_steps`); host-side only."""

    @contextlib.contextmanager
    def running(self, epochs: int, first_epoch: int = 0) -> Iterator[Reporter]:
        """Around the training of `epochs` epochs, starting after `first_epoch` (a live display's life)."""
        yield self


class Silent(Reporter):
    """Says nothing: for research code that reads the returned results and the files."""

    def message(self, text: str) -> None:
        pass
