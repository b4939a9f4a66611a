"""Ensembles: the members' eval-mode probabilities, their mean, and accuracies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ptm_func.data.dataset import Split
from ptm_func.nets.layers import Params, State
from ptm_func.nets.registry import Model
from ptm_func.research.evaluation import probabilities
from ptm_func.training.losses import accuracy_count


@torch.no_grad()
def ensemble_probabilities(
    members: Sequence[tuple[Model, Params, State]], images: Tensor, *, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Eval-mode softmax probabilities: (K, N, classes) per member, and (N, classes) their mean.

    Raises ValueError naming the members whose probabilities are not finite (NaN weights): one
    such member would turn the mean into NaN, and every prediction into class 0.
    """
    per_member = [
        probabilities(model, params, state, images, batch_size=batch_size) for model, params, state in members
    ]
    probs = torch.stack(per_member)  # (K, N, classes)
    broken = [k for k, p in enumerate(per_member) if not bool(torch.isfinite(p).all())]
    if broken:
        raise ValueError(
            f"member {', '.join(map(str, broken))} of {len(per_member)} gives NaN or infinite "
            "probabilities (weights not finite?)"
        )
    return probs, probs.mean(dim=0)


def ensemble_accuracy(members: Sequence[tuple[Model, Params, State]], split: Split) -> dict[str, Any]:
    """Each member's accuracy and the ensemble's (argmax of the mean of their probabilities)."""
    probs, mean = ensemble_probabilities(members, split.images)
    n = len(split)
    return {
        "members": [accuracy_count(p, split.labels).item() / n for p in probs],
        "ensemble": accuracy_count(mean, split.labels).item() / n,
    }
