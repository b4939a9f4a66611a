"""A tuning search space: what `ptm tune --lr 1e-3:1e-1:log --n-chans1 16,32` asks for.

A range `LOW:HIGH` (`:log` for a log scale, `:int` for whole numbers) is sampled; a comma list
is a categorical choice; one value fixes the setting. Names are TrainConfig fields and model
options; model options change shapes, so trials are grouped by them (`shape_of`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ptm_func.errors import SettingsError

# what a search may vary: TrainConfig's hyperparameters and seed, and the built-ins' model options
HYPER = ("lr", "momentum", "dampening", "weight_decay", "l2_lambda", "l1_lambda")
WHOLE = ("seed", "n_chans1", "n_blocks")
SHAPES = ("n_chans1", "n_blocks")  # settings that change the model's tensors
SEARCHABLE = (*HYPER, *WHOLE)


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a range (low, high, log) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    whole: bool = False  # sampled as an int
    choices: tuple[float | int, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return f"{self.name} in {{{', '.join(f'{c:g}' for c in self.choices)}}}"
        scale = " (log)" if self.log else ""
        return f"{self.name} in [{self.low:g}, {self.high:g}]{scale}"

    def suggest(self, trial: Any) -> float | int:
        """Optuna's value for this dimension (a trial, or an enqueued retry's fixed value)."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.whole:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def parse_dimension(name: str, text: str) -> Dimension | float | int:
    """'1e-3:1e-1:log' -> a range; '16,32,64' -> choices; '0.9' -> that fixed value."""
    option = f"--{name.replace('_', '-')}"
    if name not in SEARCHABLE:
        raise SettingsError(f"cannot search {name!r}; searchable: {', '.join(SEARCHABLE)}")
    whole = name in WHOLE
    text = text.strip()
    if ":" in text:
        return _range(name, option, text, whole)
    values = [_number(option, v, whole) for v in text.split(",") if v.strip()]
    if not values:
        raise SettingsError(f"{option} takes LOW:HIGH[:log] or comma-separated values, got {text!r}")
    if len(set(values)) != len(values):
        raise SettingsError(f"{option}: give distinct values, got {text!r}")
    if len(values) == 1:
        return values[0]
    return Dimension(name, whole=whole, choices=tuple(values))


def _range(name: str, option: str, text: str, whole: bool) -> Dimension:
    parts = text.split(":")
    flags = [p.strip() for p in parts[2:]]
    if len(parts) < 2 or any(f not in ("log", "int") for f in flags):
        raise SettingsError(f"{option} takes LOW:HIGH, LOW:HIGH:log or LOW:HIGH:int, got {text!r}")
    whole = whole or "int" in flags
    low, high = (_number(option, p, whole) for p in parts[:2])
    log = "log" in flags
    if not low < high:
        raise SettingsError(f"{option}: LOW must be below HIGH, got {text!r}")
    if log and low <= 0:
        raise SettingsError(f"{option}: a log range needs LOW > 0, got {text!r}")
    return Dimension(name, float(low), float(high), log=log, whole=whole)


def _number(option: str, text: str, whole: bool) -> float | int:
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        kind = "whole numbers" if whole else "numbers"
        raise SettingsError(f"{option} takes {kind}, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{option} takes finite numbers, got {text.strip()!r}")
    return value


@dataclass(frozen=True)
class Space:
    """The searched dimensions and the settings they leave fixed."""

    dimensions: tuple[Dimension, ...]
    fixed: dict[str, float | int]

    @classmethod
    def parse(cls, texts: dict[str, str]) -> Space:
        dims, fixed = [], {}
        for name, text in texts.items():
            parsed = parse_dimension(name, text)
            if isinstance(parsed, Dimension):
                dims.append(parsed)
            else:
                fixed[name] = parsed
        if not dims:
            raise SettingsError("nothing to search: give a range or a list, e.g. --lr 1e-3:1e-1:log")
        return cls(tuple(dims), fixed)

    def sample(self, trial: Any) -> dict[str, float | int]:
        """A trial's settings: its sampled values and the fixed ones, in a fixed order."""
        return {**self.fixed, **{d.name: d.suggest(trial) for d in self.dimensions}}

    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def grid(self) -> dict[str, list[float | int]]:
        """The grid sampler's space: every dimension must be a list."""
        ranges = [d.name for d in self.dimensions if not d.choices]
        if ranges:
            names = ", ".join(f"--{n.replace('_', '-')}" for n in ranges)
            raise SettingsError(f"--sampler grid takes comma lists only; {names} is a range")
        return {d.name: list(d.choices) for d in self.dimensions}

    def grid_size(self) -> int:
        return math.prod(len(d.choices) for d in self.dimensions)

    def describe(self) -> str:
        return "; ".join(d.describe() for d in self.dimensions)

    def to_json(self) -> dict[str, Any]:
        return {
            "dimensions": [
                {"name": d.name, "low": d.low, "high": d.high, "log": d.log, "whole": d.whole,
                 "choices": list(d.choices)}
                for d in self.dimensions
            ],
            "fixed": dict(self.fixed),
        }  # fmt: skip


def shape_of(settings: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The model options among a trial's settings: trials of one shape train together."""
    return tuple((k, settings[k]) for k in SHAPES if k in settings)
