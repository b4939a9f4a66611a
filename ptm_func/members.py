"""K members in one set of tensors: stack and unstack pytrees, and ensemble predictions.

A member is one model's params, state and optimizer state; K members stacked along dim 0 are
what `torch.func.vmap` trains in one step (`train.fit` with K configs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .data import Split
from .evaluation import probabilities
from .layers import Params, State
from .losses import accuracy_count
from .registry import Model


def stack(trees: list[Any], _stacked: dict | None = None) -> Any:
    """Stack a list of equally shaped pytrees (dicts / NamedTuples of tensors) along dim 0.

    Keys that share one tensor in every tree (a tied model's aliases) share the stacked one,
    as a step's outputs do: a compiled step guards on which of its inputs are the same tensor.
    """
    stacked = {} if _stacked is None else _stacked  # ids of the K tensors -> their stack
    first = trees[0]
    if isinstance(first, Tensor):
        ids = tuple(map(id, trees))
        if ids not in stacked:
            stacked[ids] = torch.stack(trees)
        return stacked[ids]
    if isinstance(first, dict):
        return {k: stack([t[k] for t in trees], stacked) for k in first}
    if isinstance(first, tuple):
        return type(first)(*(stack([t[i] for t in trees], stacked) for i in range(len(first))))
    raise TypeError(f"cannot stack {type(first).__name__}")


def unstack(tree: Any, index: int) -> Any:
    """Member `index` of a stacked pytree (views, no copies)."""
    if isinstance(tree, Tensor):
        return tree[index]
    if isinstance(tree, dict):
        return {k: unstack(v, index) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return type(tree)(*(unstack(v, index) for v in tree))
    raise TypeError(f"cannot unstack {type(tree).__name__}")


@torch.no_grad()
def ensemble_probabilities(
    members: Sequence[tuple[Model, Params, State]], images: Tensor, *, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Eval-mode softmax probabilities: (K, N, classes) per member, and (N, classes) their mean."""
    per_member = [
        probabilities(model, params, state, images, batch_size=batch_size) for model, params, state in members
    ]
    probs = torch.stack(per_member)  # (K, N, classes)
    return probs, probs.mean(dim=0)


def ensemble_accuracy(members: Sequence[tuple[Model, Params, State]], split: Split) -> dict[str, Any]:
    """Each member's accuracy and the ensemble's (argmax of the mean of their probabilities)."""
    probs, mean = ensemble_probabilities(members, split.images)
    n = len(split)
    return {
        "members": [accuracy_count(p, split.labels).item() / n for p in probs],
        "ensemble": accuracy_count(mean, split.labels).item() / n,
    }
