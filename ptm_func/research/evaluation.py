"""A model's loss as a pure function of its weights, and batched evaluation of given weights.

What research code composes with torch.func: `loss` is a function of `params` to `grad`,
`vmap` or evaluate at any point of weight space; `evaluate_split` scores weights on a whole
split in batches; `recompute_running_stats` gives BatchNorm statistics that match weights
that were never trained as such (an average, a point on a line).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ptm_func.data.dataset import Split
from ptm_func.nets.layers import Params, State
from ptm_func.nets.models import retie
from ptm_func.nets.registry import Model
from ptm_func.training.losses import cross_entropy

EVAL_BATCH = 256


def loss(
    model: Model,
    params: Params,
    state: State,
    images: Tensor,
    labels: Tensor,
    *,
    train: bool = False,
    key=None,
) -> Tensor:
    """Mean cross-entropy of `model` with these weights (eval mode unless `train`; no penalty).

    Pure: `torch.func.grad(lambda p: loss(model, p, state, x, y))(params)` is dloss/dparams.
    """
    logits, _ = model.apply(params, state, images, train=train, key=key)
    return cross_entropy(logits, labels)


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean cross-entropy over the split
    accuracy: float
    n: int


@torch.no_grad()
def evaluate_split(
    model: Model, params: Params, state: State, split: Split, *, batch_size: int = EVAL_BATCH
) -> Evaluation:
    """Eval-mode loss and accuracy of these weights on a whole split, in batches."""
    total = torch.zeros((), dtype=torch.float64, device=split.labels.device)
    correct = torch.zeros((), dtype=torch.int64, device=split.labels.device)
    for start in range(0, len(split), batch_size):
        images, labels = split.images[start : start + batch_size], split.labels[start : start + batch_size]
        logits, _ = model.apply(params, state, images, train=False)
        total += F.cross_entropy(logits, labels, reduction="sum").double()
        correct += (logits.argmax(dim=1) == labels).sum()
    n = len(split)
    return Evaluation(total.item() / n, correct.item() / n, n)


@torch.no_grad()
def probabilities(
    model: Model, params: Params, state: State, images: Tensor, *, batch_size: int = EVAL_BATCH
) -> Tensor:
    """Eval-mode softmax probabilities, (N, classes)."""
    chunks = [
        torch.softmax(model.apply(params, state, images[i : i + batch_size], train=False)[0], dim=1)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def has_running_stats(state: State) -> bool:
    return any(k.endswith(".running_mean") for k in state)


@torch.no_grad()
def recompute_running_stats(
    model: Model, params: Params, state: State, images: Tensor, *, batch_size: int = 64
) -> State:
    """BatchNorm running statistics re-estimated for these weights on `images`.

    Starting from the reset statistics (mean 0, variance 1, count 0), the train-mode forward
    runs over `images` in batches, each updating the statistics as in training (momentum 0.1,
    unbiased variance): an exponential average dominated by the last ~20 batches, as a trained
    model's own are. Dropout is off. A model without BatchNorm keeps its (empty) state.
    """
    if not has_running_stats(state):
        return state
    reset = {
        k: torch.ones_like(v) if k.endswith(".running_var") else torch.zeros_like(v) for k, v in state.items()
    }
    stats = retie(reset, model.aliases)  # a tied block keeps one set of statistics
    for start in range(0, len(images), batch_size):
        _, stats = model.apply(params, stats, images[start : start + batch_size], train=True, key=None)
    return stats
