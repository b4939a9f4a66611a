"""Train K independent copies at once: `torch.func.vmap` over stacked params.

Replica r is the run `fit` would make with seed `config.seed + r`: its own initial weights,
data order, dropout keys and BN state, advanced in lockstep with the others.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from . import rng
from .data import Dataset
from .registry import Model
from .train import (
    EpochStats,
    TrainConfig,
    TrainState,
    build_step,
    epoch_order,
    evaluate,
    init_train_state,
    snapshot,
)


def stack(trees: list[Any]) -> Any:
    """Stack a list of equally shaped pytrees (dicts / NamedTuples of tensors) along dim 0."""
    first = trees[0]
    if isinstance(first, Tensor):
        return torch.stack(trees)
    if isinstance(first, dict):
        return {k: stack([t[k] for t in trees]) for k in first}
    if isinstance(first, tuple):
        return type(first)(*(stack([t[i] for t in trees]) for i in range(len(first))))
    raise TypeError(f"cannot stack {type(first).__name__}")


def unstack(tree: Any, index: int) -> Any:
    """Replica `index` of a stacked pytree."""
    if isinstance(tree, Tensor):
        return tree[index]
    if isinstance(tree, dict):
        return {k: unstack(v, index) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return type(tree)(*(unstack(v, index) for v in tree))
    raise TypeError(f"cannot unstack {type(tree).__name__}")


@dataclass
class EnsembleResult:
    replicas: list[TrainState]  # one unstacked TrainState per replica
    seeds: list[int]
    history: list[EpochStats] = field(default_factory=list)  # loss / accuracy averaged over replicas
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    interrupted: bool = False
    diverged_in: int | None = None  # the epoch whose loss went NaN or infinite for some member
    diverged_members: list[int] = field(default_factory=list)  # which (replicas are the last finite)

    def summary(self) -> dict[str, Any]:
        def spread(values):
            if not values:
                return None
            return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}

        return {
            "replicas": len(self.seeds),
            "seeds": self.seeds,
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
            "train_accuracy_mean_std": spread(self.train_accuracy),
            "val_accuracy_mean_std": spread(self.val_accuracy),
            "seconds": round(self.seconds, 3),
            "peak_memory_bytes": self.peak_memory_bytes,
        }


def fit_ensemble(
    model: Model,
    data: Dataset,
    config: TrainConfig,
    replicas: int,
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> EnsembleResult:
    """Train `replicas` independently initialised copies of `model` in one vmapped step.

    `stop_requested` is polled after every step; a stopped ensemble returns its weights
    as they are (result.interrupted, no evaluation). Ensembles do not resume.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if config.eval_train_mode:
        raise ValueError("ensembles evaluate in eval mode only (no --book-quirks)")
    device = data.train.images.device
    seeds = [config.seed + r for r in range(replicas)]
    starts = [init_train_state(model, replace(config, seed=s), device) for s in seeds]
    params, state, opt_state = (
        stack([getattr(ts, f) for ts in starts]) for f in ("params", "state", "opt_state")
    )
    step = build_step(model, config, device, vmapped=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    base_keys = torch.stack([rng.key(s, device) for s in seeds])  # (K,)
    n = len(data.train)
    n_batches = math.ceil(n / config.batch_size)
    result = EnsembleResult([], seeds)
    started = time.perf_counter()
    last_good = snapshot(TrainState(params, state, opt_state))
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        # (K, n): each replica's own sample order, as its separate run would draw it
        orders = torch.stack([epoch_order(s, epoch, n, config.shuffle, device) for s in seeds])
        steps = torch.arange(n_batches, device=device) + epoch * n_batches
        keys = rng.fold_in(base_keys[:, None], steps[None, :])  # (K, n_batches)
        loss_sum = torch.zeros(replicas, device=device)
        correct = torch.zeros(replicas, dtype=torch.int64, device=device)
        for i in range(n_batches):
            idx = orders[:, i * config.batch_size : (i + 1) * config.batch_size]  # (K, B)
            params, state, opt_state, metrics = step(
                params, state, opt_state, data.train.images[idx], data.train.labels[idx], keys[:, i]
            )
            loss_sum += metrics["loss"]
            correct += metrics["correct"]
            if on_step is not None:
                on_step(i + 1, n_batches)
            if stop_requested is not None and stop_requested():
                result.interrupted = True
                break
        if result.interrupted:
            break
        seconds = time.perf_counter() - t0
        losses = (loss_sum / n_batches).tolist()  # the epoch's one host sync
        result.diverged_members = [r for r, loss in enumerate(losses) if not math.isfinite(loss)]
        if result.diverged_members:
            result.diverged_in = epoch + 1
            params, state, opt_state = last_good.params, last_good.state, last_good.opt_state
            break
        last_good = snapshot(TrainState(params, state, opt_state))
        running = (correct.double() / n).tolist()
        vals = [None] * replicas
        if config.validates_after(epoch + 1):
            vals = [evaluate(model, unstack(params, r), unstack(state, r), data.val) for r in range(replicas)]
        stats = EpochStats(
            epoch + 1,
            config.epochs,
            statistics.fmean(losses),
            statistics.fmean(running),
            seconds,
            replicas * n / seconds,
            val_accuracy=None if vals[0] is None else statistics.fmean(vals),
            members={"loss": losses, "train_accuracy_running": running, "val_accuracy": vals},
        )
        result.history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    for r in range(replicas):
        ts = TrainState(unstack(params, r), unstack(state, r), unstack(opt_state, r), len(result.history))
        result.replicas.append(ts)
        if not result.interrupted and result.diverged_in is None:
            result.train_accuracy.append(evaluate(model, ts.params, ts.state, data.train))
            result.val_accuracy.append(evaluate(model, ts.params, ts.state, data.val))
    result.seconds = time.perf_counter() - started
    result.peak_memory_bytes = _peak_memory(device)
    return result


def _peak_memory(device: torch.device) -> int:
    """Peak device memory on CUDA; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
