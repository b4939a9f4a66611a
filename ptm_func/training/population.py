"""Changing the members of a run between epochs: stopping some (a pruned trial) and
exploiting (population-based training: weights copied, hyperparameters changed).

`fit` (loop.py) calls these on its `_Epochs`; the stacked TrainState and the step's
hyperparameter input change together, so the step goes on with the members as they are now.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ptm_func.training.config import TrainConfig, step_hyperparameters
from ptm_func.training.members import check_members
from ptm_func.training.state import (
    EpochStats,
    TrainResult,
    TrainState,
    member_state,
    select_members,
    snapshot,
)

# exploit(stats, ts, configs) -> None (no change) or the members' new (ts, configs)
Exploit = Callable[[EpochStats, TrainState, list[TrainConfig]], "tuple[TrainState, list[TrainConfig]] | None"]


def everyone(values: list | None, active: list[int], k: int) -> list:
    """The active members' values at their places among all K (None for the others)."""
    out: list = [None] * k
    for position, index in enumerate(active):
        out[index] = None if values is None else values[position]
    return out


def between_epochs(run: Any, result: TrainResult, ts: TrainState, stats: EpochStats,
                   stop_members: Callable | None, exploit: Exploit | None):  # fmt: skip
    """fit's member changes after an epoch: (run, ts, whether the members changed). A run whose
    members all stopped has no active member left and no final evaluation (None each)."""
    changed = False
    if stop_members is not None:
        run, new = stop_some(run, result, ts, stop_members(stats, ts))
        changed, ts = new is not ts, new
        if not run.active:
            nothing: list[float | None] = [None] * len(result.configs)
            result.train_accuracy, result.val_accuracy = nothing, list(nothing)
            return run, ts, changed
    if exploit is not None:
        exploits = exploit(stats, ts, list(run.configs))
        if exploits is not None:
            run, ts = exploited(run, result, *exploits)
            changed = True
    return run, ts, changed


def stop_some(run: Any, result: TrainResult, ts: TrainState, stop: Collection[int]):
    """Take the members `stop` names (fit's indices) out of the stack, keeping their states."""
    stop = {r for r in stop if r in run.active and r not in result.diverged}
    if not stop:
        return run, ts
    for r in sorted(stop):
        result.stopped[r] = (ts.epoch, snapshot(member_state(ts, run.active.index(r), result.configs[r])))
    keep = [p for p, r in enumerate(run.active) if r not in stop]
    run = replace(
        run,
        configs=[run.configs[p] for p in keep],
        hyper={k: v[keep] if isinstance(v, Tensor) else v for k, v in run.hyper.items()},
        base_keys=run.base_keys[keep],
        active=[run.active[p] for p in keep],
    )
    result.active = run.active
    if not keep:
        return run, ts
    picked = select_members(ts, keep)
    result.train_state = picked
    return run, picked


def _finite(params: dict[str, Tensor], position: int) -> bool:
    return all(bool(torch.isfinite(value[position]).all()) for value in params.values())


def exploited(run: Any, result: TrainResult, ts: TrainState, configs: Sequence[TrainConfig]):
    """The run with the members' new state and configs (same seeds, same shared settings).

    A hyperparameter the step takes as a (K,) tensor stays one; one that every member shared
    when the step was built (a Python number in it) cannot start to differ."""
    configs = list(configs)
    check_members(configs)
    if [c.seed for c in configs] != [c.seed for c in run.configs]:
        raise ValueError("exploit may change hyperparameters, not the members' seeds")
    hyper = step_hyperparameters(configs, run.base_keys.device)
    for key, old in run.hyper.items():
        new = hyper[key]
        if isinstance(old, Tensor) and not isinstance(new, Tensor):
            hyper[key] = old.new_full(old.shape, new)
        elif not isinstance(old, Tensor) and isinstance(new, Tensor):
            raise ValueError(
                f"{key} was the same for every member when the step was built; it cannot vary now"
            )
    for position, index in enumerate(run.active):
        result.configs[index] = configs[position]
        if index in result.diverged and _finite(ts.params, position):  # rescued: weights copied in
            del result.diverged[index]
    result.train_state = ts
    return replace(run, configs=configs, hyper=hyper), ts
