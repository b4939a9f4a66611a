"""Ctrl-C and SIGTERM as a request: the training loop stops after its step and the run saves."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator


class StopOnSignal:
    """Polled by fit after every step: true once SIGINT or SIGTERM arrived. A second one aborts,
    unless the run is one rank of several (`patient`): Ctrl-C reaches every process of the
    group and the launcher then sends SIGTERM too, and the ranks must still save together."""

    def __init__(self, say: Callable[[str], None] | None = None, patient: bool = False):
        self.signal = 0
        self.say = say
        self.patient = patient

    def __call__(self) -> bool:
        return self.signal != 0

    def _handle(self, signum, frame):
        if self.signal:
            if self.patient:
                return
            raise KeyboardInterrupt
        self.signal = signum
        if self.say is not None:
            self.say("\nptm: stopping after this step and saving a checkpoint ...")

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopOnSignal]:
        """Catch SIGINT and SIGTERM inside the block (main thread only); restore the handlers after."""
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
