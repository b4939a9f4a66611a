"""A compiled step that cannot take a run down: when it raises, the next candidate runs.

Compiling (inductor, a C++ or Triton toolchain) and CUDA-graph capture fail in ways eager
PyTorch does not: a missing compiler, an unsupported op, a capture error. The step functions
are pure (new tensors out, inputs untouched), so a failed call can be repeated with the same
inputs by a less ambitious candidate - reduce-overhead, then the default compile, then eager -
and the run's results stay those of the eager step up to float rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

log = logging.getLogger("ptm_func")


class FallbackStep:
    """Call the first candidate `(label, step)`; on an exception, say so once and move on.

    `events` lists what failed (one line each) and `label` names the step in use. The last
    candidate's exceptions propagate (they are the computation's own: bad inputs, out of
    memory), as do KeyboardInterrupt and SystemExit, which are not Exceptions.
    """

    def __init__(self, candidates: Sequence[tuple[str, Callable]]):
        if not candidates:
            raise ValueError("FallbackStep needs at least one candidate step")
        self.candidates = list(candidates)
        self.events: list[str] = []

    @property
    def label(self) -> str:
        return self.candidates[0][0]

    def __call__(self, *args, **kwargs):
        while True:
            label, step = self.candidates[0]
            if len(self.candidates) == 1:
                return step(*args, **kwargs)
            try:
                return step(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any failure of compiling or capturing
                self.candidates.pop(0)
                event = f"the {label} step failed ({describe(err)}); using the {self.label} step"
                self.events.append(event)
                log.warning("ptm: %s", event)


class ComposedStep:
    """A step built of other steps (members one after another, a rank's two compiled parts):
    calls `call`; fallback_events looks inside `fallbacks` for what fell back."""

    def __init__(self, call: Callable, fallbacks: tuple[Callable, ...]):
        self.call, self.fallbacks = call, fallbacks

    def __call__(self, *args, **kwargs):
        return self.call(*args, **kwargs)


def describe(err: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, at most `limit` characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):  # "backend='inductor' raised:" and the cause
        lines[0] = f"{lines[0]} {lines[1]}"
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fallback_events(step: Callable) -> list[str]:
    """What fell back in `step` (a FallbackStep, or a step wrapping some)."""
    found = getattr(step, "events", None)
    if found is not None:
        return list(found)
    return [event for inner in getattr(step, "fallbacks", ()) for event in fallback_events(inner)]
