"""Ctrl-C and SIGTERM as a request: the training loop stops after its step and saves."""

from __future__ import annotations

import contextlib
import signal

import typer


class StopOnSignal:
    """Polled by fit after every step: true once SIGINT or SIGTERM arrived (a second one aborts)."""

    def __init__(self):
        self.signal = 0

    def __call__(self) -> bool:
        return self.signal != 0

    def _handle(self, signum, frame):
        if self.signal:
            raise KeyboardInterrupt
        self.signal = signum
        typer.echo("\nptm: stopping after this step and saving a checkpoint ...", err=True)

    @contextlib.contextmanager
    def installed(self):
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
