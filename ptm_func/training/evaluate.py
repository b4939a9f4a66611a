"""Accuracy during training: eval mode, or the book's train-mode validate()."""

from __future__ import annotations

import torch
from torch import Tensor

from ptm_func.data.dataset import Split
from ptm_func.nets import rng
from ptm_func.nets.layers import Params, State
from ptm_func.nets.registry import Model
from ptm_func.training.config import TrainConfig
from ptm_func.training.losses import accuracy_count


@torch.no_grad()
def evaluate(model: Model, params: Params, state: State, split: Split, *, batch_size: int = 256) -> float:
    """Accuracy in eval mode (running BN stats, no dropout).

    Batches of 256: on a 2-core CPU 1.5-2x faster than 1000 (activations stay in cache).
    """
    correct = torch.zeros((), dtype=torch.int64, device=split.labels.device)
    for start in range(0, len(split), batch_size):
        logits, _ = model.apply(params, state, split.images[start : start + batch_size], train=False)
        correct += accuracy_count(logits, split.labels[start : start + batch_size])
    return correct.item() / len(split)


@torch.no_grad()
def evaluate_book_style(
    model: Model, params: Params, state: State, split: Split, *, batch_size: int, key: Tensor
) -> tuple[float, State]:
    """The book's validate(): train mode, its batches, BN stats updated as it goes."""
    correct = torch.zeros((), dtype=torch.int64, device=split.labels.device)
    for i, start in enumerate(range(0, len(split), batch_size)):
        images = split.images[start : start + batch_size]
        logits, state = model.apply(params, state, images, train=True, key=rng.fold_in(key, i))
        correct += accuracy_count(logits, split.labels[start : start + batch_size])
    return correct.item() / len(split), state


@torch.no_grad()
def validation_accuracy(
    model: Model, params: Params, state: State, split: Split, config: TrainConfig, *, key: Tensor
) -> float:
    """Val accuracy during training, changing nothing the training sees.

    Eval mode; with `eval_train_mode` the book's train-mode validate(), its BN updates
    discarded. `key` (dropout, train mode only) is not one the training steps use.
    """
    if config.eval_train_mode:
        return evaluate_book_style(model, params, state, split, batch_size=config.batch_size, key=key)[0]
    return evaluate(model, params, state, split)
