"""The one training loop, `fit`: one run, K members in lockstep, or one rank of several."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ptm_func.data.dataset import Dataset
from ptm_func.nets import rng
from ptm_func.nets.registry import Model
from ptm_func.training import tuning
from ptm_func.training.compiling import build_data_parallel_step, build_step, uses_channels_last, will_compile
from ptm_func.training.config import TrainConfig, step_hyperparameters
from ptm_func.training.distributed import World, shard
from ptm_func.training.evaluate import evaluate, evaluate_book_style, validation_accuracy
from ptm_func.training.fallback import fallback_events
from ptm_func.training.members import check_members, stack, unstack
from ptm_func.training.population import Exploit, between_epochs, everyone
from ptm_func.training.state import (
    EpochStats,
    TrainResult,
    TrainState,
    init_members,
    init_train_state,
    member_state,
    peak_memory,
    per_member,
    single,
    snapshot,
)


def validation_key(base_key: Tensor, epoch: int) -> Tensor:
    """Dropout key of the train-mode validation after `epoch`; train steps use fold_in(base, step >= 0)."""
    return rng.fold_in(rng.fold_in(base_key, -2), epoch)


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool, device) -> Tensor:
    """The sample order of one epoch: a permutation seeded by (seed, epoch), or 0..n-1."""
    if not shuffle:
        return torch.arange(n, device=device)
    gen = torch.Generator().manual_seed(int(rng.fold_in(seed, epoch)))
    return torch.randperm(n, generator=gen).to(device)


@dataclass
class _Epochs:
    """What one `fit` call fixes before its first step: the steps, the data and the keys."""

    model: Model
    data: Dataset
    configs: list[TrainConfig]
    members: bool  # K members stacked along dim 0, or one run
    world: World | None
    train_images: Tensor  # in the steps' memory layout
    hyper: dict[str, Any]  # the steps' hyperparameter input
    step: Callable  # full batches
    partial_step: Callable  # the epoch's last, smaller batch
    base_keys: Tensor  # (K,) or one key: each member's seed as a key
    on_step: Callable[[int, int], None] | None
    stop_requested: Callable[[], bool] | None
    active: list[int]  # the members still in the stack, by their index in fit's configs

    @property
    def lead(self) -> TrainConfig:
        return self.configs[0]

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.data.train) / self.lead.batch_size)


def fit(
    model: Model,
    data: Dataset,
    config: TrainConfig | Sequence[TrainConfig],
    *,
    start: TrainState | None = None,
    on_epoch: Callable[[EpochStats, TrainState], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    world: World | None = None,
    stop_members: Callable[[EpochStats, TrainState], Collection[int]] | None = None,
    exploit: Exploit | None = None,
) -> TrainResult:
    """Train one model (a TrainConfig), or K members at once (a sequence of K TrainConfigs).

    K members train in lockstep on stacked tensors (one vmapped step, or the single step member
    after member: TrainConfig.members_vmap); member r is the run its config alone would make:
    its own seed (init, data order, dropout keys) and hyperparameters, and a member whose loss
    turns NaN stops alone. `start` resumes a saved TrainState (stacked for members);
    `on_step(step, n_steps)` sees each step (host-side only, no sync); `stop_requested` is
    polled after every step and ends the run early (result.interrupted, no evaluation) with
    the state to save. A loss that turns NaN or infinite ends a run at its last finite state.
    `stop_members(stats, ts)` (K members) names members to stop after an epoch (a pruned
    trial): each keeps its state there (result.stopped) and leaves the stack, so it costs no
    more step time; the others go on exactly as before. Epoch stats keep K entries (None for a
    stopped member); `ts` given to callbacks holds the members still training (result.active).
    `exploit(stats, ts, configs)` (K members, population-based training) may return a new
    (ts, configs) after an epoch: weights copied between members, hyperparameters changed
    (seeds and shared settings stay); result.configs follows.
    In a `world` of several ranks (one run) each rank trains its slice of every global batch
    (see distributed.py); every rank returns the same result, and they stop at the same step.
    """
    members = not isinstance(config, TrainConfig)
    configs = list(config) if members else [config]
    check_members(configs)
    device = data.train.images.device
    if start is None:
        start = (
            init_members(model, configs, device) if members else init_train_state(model, configs[0], device)
        )
    if world is not None and (members or configs[0].eval_train_mode):
        raise ValueError("several ranks train one run in eval-mode validation (no members, no book quirks)")
    run = _prepare(model, data, configs, members, world, on_step, stop_requested, exploit is not None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ts = start
    result = TrainResult(ts, configs, members)
    started = time.perf_counter()
    last_good = snapshot(ts)  # where a diverged run goes back to
    while ts.epoch < run.lead.epochs:
        t0 = time.perf_counter()
        params, state, opt_state, loss_sum, correct, stopped_at, vote = _train_epoch(run, ts)
        if stopped_at is not None:
            ts = TrainState(
                params, state, opt_state, ts.epoch, stopped_at, loss_sum.tolist(), correct.tolist()
            )
            result.train_state, result.interrupted = ts, True
            _note_divergence(result, loss_sum, ts.epoch + 1, last_good)
            return _finish(result, started, run.step, device)
        if _note_divergence(result, loss_sum, ts.epoch + 1, last_good):
            return _finish(result, started, run.step, device)
        ts, stats = _close_epoch(run, ts, result, (params, state, opt_state), loss_sum, correct, t0)
        last_good = snapshot(ts)
        if on_epoch is not None:
            on_epoch(stats, ts)
        if members and ts.epoch < run.lead.epochs and (stop_members or exploit):
            run, ts, changed = between_epochs(run, result, ts, stats, stop_members, exploit)
            if changed:
                last_good = snapshot(ts)
            if not run.active:  # every member stopped early
                return _finish(result, started, run.step, device)
        if world is None and stop_requested is not None:  # a signal during validation
            vote = stop_requested()
        if vote and ts.epoch < run.lead.epochs:
            result.interrupted = True
            return _finish(result, started, run.step, device)
    _final_evaluation(model, result, data, run.base_keys)
    result.peak_memory_bytes = peak_memory(device)
    return _finish(result, started, run.step, device)


def _close_epoch(run: _Epochs, ts: TrainState, result: TrainResult, trained, loss_sum, correct, t0: float):
    """After a whole epoch from `ts`: the next epoch's TrainState (result.train_state) and the
    epoch's stats (appended to result.history), through the epoch's one host sync."""
    losses = (loss_sum.double() / run.n_batches).tolist()
    running = (correct.double() / len(run.data.train)).tolist()
    seconds = time.perf_counter() - t0
    steps_run = run.n_batches - ts.step_in_epoch
    k = len(run.configs)
    no_loss: float | list[float] = [0.0] * k if run.members else 0.0
    none_correct: int | list[int] = [0] * k if run.members else 0
    params, state, opt_state = trained
    ts = TrainState(params, state, opt_state, ts.epoch + 1, 0, no_loss, none_correct)
    result.train_state = ts
    stats = _epoch_stats(run, ts, result, losses, running, seconds, steps_run)
    result.history.append(stats)
    return ts, stats


def _prepare(model, data, configs, members, world, on_step, stop_requested, batched=False) -> _Epochs:
    """The steps (compiled where it pays), the images in their layout, the keys."""
    lead, device = configs[0], data.train.images.device
    # the steps' images; evaluation reads `data` as given, as `ptm eval` will
    train_images = tuning.in_layout(data.train.images, uses_channels_last(lead, device, model))
    if device.type == "cpu":
        tuning.tune_allocator()
    hyper = step_hyperparameters(configs, device, batched)  # batched: exploit changes any of them

    def make(config: TrainConfig) -> Callable:
        if world is not None:
            return build_data_parallel_step(model, config, device, world)
        return build_step(model, config, device, members_hyper=hyper if members else None)

    step = make(lead)
    # The epoch's last, smaller batch (10,000 = 156 x 64 + 16) runs eagerly: compiling a second
    # graph for it doubled the compile time, for one step in 157.
    partial_step = make(replace(lead, compile=False)) if will_compile(lead, device, model) else step
    seeds = [c.seed for c in configs]
    base_keys = torch.stack([rng.key(s, device) for s in seeds]) if members else rng.key(lead.seed, device)
    return _Epochs(
        model, data, configs, members, world, train_images, hyper, step, partial_step, base_keys,
        on_step, stop_requested, list(range(len(configs))),
    )  # fmt: skip


def _train_epoch(run: _Epochs, ts: TrainState) -> tuple:
    """The steps of one epoch from `ts`'s position: (params, state, opt_state, loss_sum, correct,
    the step count where a stop request ended it early (None: it did not), the last stop vote)."""
    lead, data, device = run.lead, run.data, run.train_images.device
    n, n_batches = len(data.train), run.n_batches
    # (n,) or (K, n): each member's own sample order, as its separate run draws it
    orders = [epoch_order(c.seed, ts.epoch, n, lead.shuffle, device) for c in run.configs]
    order = torch.stack(orders) if run.members else orders[0]
    # one key per sample, from (seed, global step, position in the batch): resumable,
    # reproducible, and a sample's dropout mask does not depend on how the batch is split
    steps = torch.arange(n_batches, device=device) + ts.epoch * n_batches
    step_keys = rng.fold_in(run.base_keys.unsqueeze(-1), steps)  # (n_batches,) or (K, n_batches)
    positions = torch.arange(min(lead.batch_size, n), device=device)  # a batch is at most the data
    keys = rng.fold_in(step_keys.unsqueeze(-1), positions)  # (n_batches, B) or (K, n_batches, B)
    loss_sum = torch.tensor(ts.loss_sum, dtype=torch.float32, device=device)
    correct = torch.tensor(ts.correct, dtype=torch.int64, device=device)
    params, state, opt_state, stop = ts.params, ts.state, ts.opt_state, False
    asked = run.stop_requested
    for i in range(ts.step_in_epoch, n_batches):
        idx = order[..., i * lead.batch_size : (i + 1) * lead.batch_size]  # (B,) or (K, B)
        step_keys_i = keys[..., i, : idx.shape[-1]]
        step = run.step if idx.shape[-1] == lead.batch_size else run.partial_step
        if run.world is None:
            images, labels = run.train_images[idx], data.train.labels[idx]
            params, state, opt_state, metrics = step(
                params, state, opt_state, run.hyper, images, labels, step_keys_i
            )
            stop = i + 1 < n_batches and asked is not None and asked()
        else:  # this rank's slice of the global batch; the ranks vote on stopping
            mine = shard(idx.shape[0], run.world)
            images, labels = run.train_images[idx[mine]], data.train.labels[idx[mine]]
            params, state, opt_state, metrics = step(
                params, state, opt_state, run.hyper, images, labels, step_keys_i[mine], idx.shape[0],
                asked is not None and asked(),
            )  # fmt: skip
            stop = metrics["stop"]
        loss_sum += metrics["loss"]
        correct += metrics["correct"]
        if run.on_step is not None:
            run.on_step(i + 1, n_batches)
        if i + 1 < n_batches and stop:
            return params, state, opt_state, loss_sum, correct, i + 1, stop
    return params, state, opt_state, loss_sum, correct, None, stop


def _epoch_stats(run: _Epochs, ts, result, losses, running, seconds: float, steps_run: int) -> EpochStats:
    """The finished epoch's line (K members: their means, and each one's), validated when due."""
    k = len(run.configs)
    images = min(steps_run * run.lead.batch_size, len(run.data.train))  # the last batch may be short
    samples_per_second = k * images / seconds
    val = None
    if run.lead.validates_after(ts.epoch):
        val = _validation(run.model, ts, run.data, run.configs, run.members, run.base_keys)
    if not run.members:
        val = None if val is None else single(val)
        return EpochStats(ts.epoch, run.lead.epochs, losses, running, seconds, samples_per_second, val)
    vals = None if val is None else per_member(val)
    finite = [p for p, r in enumerate(run.active) if r not in result.diverged]
    stats = EpochStats(
        ts.epoch,
        run.lead.epochs,
        statistics.fmean(losses[r] for r in finite),
        statistics.fmean(running[r] for r in finite),
        seconds,
        samples_per_second,
        None if vals is None else statistics.fmean(vals[r] for r in finite),
    )
    stats.members = {
        key: everyone(values, run.active, len(result.configs))
        for key, values in (("loss", losses), ("train_accuracy_running", running), ("val_accuracy", vals))
    }
    return stats


def _finish(result: TrainResult, started: float, step: Callable, device: torch.device) -> TrainResult:
    if device.type == "cuda":
        # CUDA-graph outputs live in a pool the next replay of any graph may overwrite (another
        # model's, in ptm compare): the result must own its tensors
        result.train_state = snapshot(result.train_state)
    result.seconds = time.perf_counter() - started
    result.fallbacks = fallback_events(step)
    return result


def _note_divergence(result: TrainResult, loss_sum: Tensor, epoch: int, last_good: TrainState) -> bool:
    """Record members whose loss turned NaN or infinite (with their last finite state).

    Members are independent under vmap, so the others train on; True once every member still
    training has diverged, with the run rolled back to `last_good`.
    """
    finite = torch.isfinite(loss_sum).reshape(-1).tolist()
    active = result.active if result.members else [0]
    for p, ok in enumerate(finite):
        r = active[p]
        if not ok and r not in result.diverged:
            member = member_state(last_good, p, result.configs[r]) if result.members else last_good
            result.diverged[r] = (epoch, member)
    if any(r not in result.diverged for r in active):
        return False
    result.train_state = last_good
    return True


def _member_views(ts: TrainState, members: bool, k: int):
    """(params, state) of each member (views into the stacked tensors)."""
    if not members:
        return [(ts.params, ts.state)]
    return [(unstack(ts.params, r), unstack(ts.state, r)) for r in range(k)]


def _validation(model, ts, data, configs, members, base_keys) -> float | list[float]:
    views = _member_views(ts, members, len(configs))
    keys = base_keys if members else base_keys.unsqueeze(0)
    accuracies = [
        validation_accuracy(model, params, state, data.val, c, key=validation_key(key, ts.epoch))
        for (params, state), c, key in zip(views, configs, keys, strict=True)
    ]
    return accuracies if members else accuracies[0]


def _final_evaluation(model: Model, result: TrainResult, data: Dataset, base_keys: Tensor) -> None:
    """Train and val accuracy of every member still training (the book's train-mode validate()
    with quirks); None for a member stopped early."""
    active, members = result.active, result.members
    configs = [result.configs[r] for r in active]
    views = _member_views(result.train_state, members, len(configs))
    for p, r in enumerate(active):  # judged by the weights they keep
        if r in result.diverged:
            views[p] = (result.diverged[r][1].params, result.diverged[r][1].state)
    keys = base_keys if members else base_keys.unsqueeze(0)
    train, val, states = [], [], []
    for (params, state), config, key in zip(views, configs, keys, strict=True):
        if config.eval_train_mode:
            eval_key = rng.fold_in(key, -1)
            acc, state = evaluate_book_style(
                model, params, state, data.train, batch_size=config.batch_size, key=eval_key
            )
            train.append(acc)
            acc, state = evaluate_book_style(
                model, params, state, data.val, batch_size=config.batch_size, key=rng.fold_in(eval_key, 1)
            )
            val.append(acc)
        else:
            train.append(evaluate(model, params, state, data.train))
            val.append(evaluate(model, params, state, data.val))
        states.append(state)
    if configs[0].eval_train_mode:  # validate() updated the BN running stats
        result.train_state.state = stack(states) if members else states[0]
    k = len(result.configs)
    result.train_accuracy = everyone(train, active, k) if members else train[0]
    result.val_accuracy = everyone(val, active, k) if members else val[0]


def fit_ensemble(
    model: Model, data: Dataset, config: TrainConfig, replicas: int, **kwargs: Any
) -> TrainResult:
    """`replicas` copies of one config, member r with seed config.seed + r, trained at once."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    return fit(model, data, [replace(config, seed=config.seed + r) for r in range(replicas)], **kwargs)
