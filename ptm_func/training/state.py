"""What the loop carries and returns: TrainState (resumable), EpochStats, TrainResult; members stacked."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from torch import Tensor

from ptm_func.nets.layers import Params, State
from ptm_func.nets.registry import Model
from ptm_func.training.config import TrainConfig
from ptm_func.training.members import select, stack, unstack
from ptm_func.training.optim import SGDState
from ptm_func.training.step import drop_aliases

V = TypeVar("V")


def single(value: V | list[V]) -> V:
    """One run's value of a field that K members hold as a list (TrainState, TrainResult)."""
    if isinstance(value, list):
        raise TypeError("a K-member list where one run's value was expected")
    return value


def per_member(value: V | list[V]) -> list[V]:
    """The K members' list of such a field."""
    if not isinstance(value, list):
        raise TypeError("one run's value where a K-member list was expected")
    return value


@dataclass
class EpochStats:
    epoch: int  # 1-based
    epochs: int
    loss: float  # mean batch loss (penalty included), as the book logs it
    train_accuracy_running: float  # accuracy on the fly while training
    seconds: float  # training only; validation is not timed in
    samples_per_second: float
    val_accuracy: float | None = None  # measured after this epoch (see TrainConfig.eval_every)
    # K members trained at once: each one's loss, train_accuracy_running and val_accuracy
    # (the fields above are their means)
    members: dict[str, Sequence[float | None]] | None = None

    def member(self, index: int) -> EpochStats:
        """Member `index`'s epoch, as its separate run would report it (time shared)."""
        if self.members is None:
            return self
        values = {key: self.members[key][index] for key in ("loss", "train_accuracy_running", "val_accuracy")}
        per_member = self.samples_per_second / len(self.members["loss"])
        return replace(self, **values, samples_per_second=per_member, members=None)


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped.

    Shuffling derives from (seed, epoch) and dropout keys from (seed, global step), so
    weights, optimizer state and the position in the run are all there is to save. For K
    members the tensors are stacked along dim 0 and the sums are lists.
    """

    params: Params
    state: State
    opt_state: SGDState
    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # completed steps of the current epoch
    loss_sum: float | list[float] = 0.0  # the current epoch's running sums, for its log line
    correct: int | list[int] = 0


def init_train_state(
    model: Model, config: TrainConfig, device, *, momentum_buffers: bool = False
) -> TrainState:
    """Fresh weights from `config.seed` and a fresh optimizer state (buffers if asked or needed)."""
    params, state = model.init(config.seed, device=device)
    optimizer = replace(config.optimizer(), momentum=1.0) if momentum_buffers else config.optimizer()
    return TrainState(params, state, optimizer.init(drop_aliases(params, model.aliases)))


def init_members(model: Model, configs: Sequence[TrainConfig], device) -> TrainState:
    """K fresh members, stacked (momentum buffers for all when any member has momentum)."""
    buffers = any(c.momentum for c in configs)
    starts = [init_train_state(model, c, device, momentum_buffers=buffers) for c in configs]
    return stack_members(starts)


def stack_members(states: Sequence[TrainState]) -> TrainState:
    """K members' TrainStates (at the same position) as one stacked TrainState."""
    first = states[0]
    if any((s.epoch, s.step_in_epoch) != (first.epoch, first.step_in_epoch) for s in states):
        raise ValueError("members must stand at the same epoch and step to train together")
    needs_buffers = any(s.opt_state.momentum for s in states)
    opt_states = [
        s.opt_state
        if s.opt_state.momentum or not needs_buffers
        else SGDState(
            {k: torch.zeros_like(v) for k, v in states[0].opt_state.momentum.items()}, s.opt_state.step
        )
        for s in states
    ]
    return TrainState(
        stack([s.params for s in states]),
        stack([s.state for s in states]),
        stack(opt_states),
        first.epoch,
        first.step_in_epoch,
        [float(single(s.loss_sum)) for s in states],
        [int(single(s.correct)) for s in states],
    )


def member_state(ts: TrainState, index: int, config: TrainConfig) -> TrainState:
    """Member `index` of a stacked TrainState, as its separate run would hold it."""
    opt_state = unstack(ts.opt_state, index)
    if not config.momentum:  # buffers only the others needed: the separate run has none
        opt_state = SGDState({}, opt_state.step)
    return TrainState(
        unstack(ts.params, index),
        unstack(ts.state, index),
        opt_state,
        ts.epoch,
        ts.step_in_epoch,
        per_member(ts.loss_sum)[index],
        per_member(ts.correct)[index],
    )


def select_members(ts: TrainState, positions: Sequence[int]) -> TrainState:
    """Members `positions` of a stacked TrainState, stacked: the ones that train on."""
    return TrainState(
        select(ts.params, positions),
        select(ts.state, positions),
        select(ts.opt_state, positions),
        ts.epoch,
        ts.step_in_epoch,
        [per_member(ts.loss_sum)[p] for p in positions],
        [per_member(ts.correct)[p] for p in positions],
    )


@dataclass
class TrainResult:
    train_state: TrainState  # K members: stacked (see member())
    configs: list[TrainConfig]
    members: bool = False  # trained as K vmapped members (lists below), or one run (floats)
    history: list[EpochStats] = field(default_factory=list)
    interrupted: bool = False  # stopped on request before the last epoch
    # member -> (the epoch its loss turned NaN or infinite, its last finite TrainState).
    # Other members train on; a single run stops there.
    diverged: dict[int, tuple[int, TrainState]] = field(default_factory=dict)
    # member -> (the epoch after which fit's stop_members took it out, its TrainState there)
    stopped: dict[int, tuple[int, TrainState]] = field(default_factory=dict)
    active: list[int] = field(default_factory=list)  # the members train_state holds (all unless stopped)
    train_accuracy: float | list[float | None] | None = None
    val_accuracy: float | list[float | None] | None = None
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    fallbacks: list[str] = field(default_factory=list)  # compiled steps that failed (fallback.py)

    def __post_init__(self):
        if not self.active:
            self.active = list(range(len(self.configs)))

    @property
    def params(self) -> Params:
        return self.train_state.params

    @property
    def state(self) -> State:
        return self.train_state.state

    @property
    def opt_state(self) -> SGDState:
        return self.train_state.opt_state

    @property
    def diverged_in(self) -> int | None:
        """The first epoch in which a member's loss turned NaN or infinite (None: never)."""
        return min((epoch for epoch, _ in self.diverged.values()), default=None)

    @property
    def diverged_members(self) -> list[int]:
        return sorted(self.diverged)

    def member(self, index: int) -> TrainState:
        """Member `index`'s TrainState (its last finite one if it diverged; where it stopped)."""
        if index in self.diverged:
            return self.diverged[index][1]
        if index in self.stopped:
            return self.stopped[index][1]
        if not self.members:
            return self.train_state
        return member_state(self.train_state, self.active.index(index), self.configs[index])

    def summary(self) -> dict[str, Any]:
        out = {
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
            "final_loss": self.history[-1].loss if self.history else None,
            "epochs_done": self.train_state.epoch,
            "seconds": round(self.seconds, 3),
        }
        if self.fallbacks:
            out["fallbacks"] = self.fallbacks
        if self.members:
            out.update(
                members=len(self.configs),
                seeds=[c.seed for c in self.configs],
                final_loss=(self.history[-1].members or {}).get("loss") if self.history else None,
                train_accuracy_mean_std=mean_std(_listed(self.train_accuracy)),
                val_accuracy_mean_std=mean_std(_listed(self.val_accuracy)),
                peak_memory_bytes=self.peak_memory_bytes,
            )
        return out


def _listed(value: float | list[float | None] | None) -> list[float] | None:
    """A K-member list's values (those of members that finished)."""
    return None if value is None else [v for v in per_member(value) if v is not None]


def mean_std(values: list[float] | None) -> dict[str, float] | None:
    """{'mean', 'std'} (population std) of `values`; None for none."""
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}


def peak_memory(device: torch.device) -> int:
    """Peak device memory on CUDA; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def snapshot(ts: TrainState) -> TrainState:
    """A copy of `ts` that later steps cannot change (shared tensors stay shared)."""
    copies: dict[int, Tensor] = {}

    def copy(tree):
        if isinstance(tree, Tensor):
            return copies.setdefault(id(tree), tree.detach().clone())
        if isinstance(tree, dict):
            return {k: copy(v) for k, v in tree.items()}
        return type(tree)(*(copy(v) for v in tree))  # SGDState

    return replace(ts, params=copy(ts.params), state=copy(ts.state), opt_state=copy(ts.opt_state))
