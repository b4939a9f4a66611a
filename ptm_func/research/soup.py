"""Weight averaging ("model soups"): one network whose weights are the mean of K members'.

A soup costs one forward pass, where an ensemble of K costs K; it works when the members lie
in one basin (trained from the same initial weights, e.g. a sweep's members with one seed) and
fails for independently initialised ones (a `--replicas` run), whose hidden units are not in
the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ptm_func.nets.layers import Params, State
from ptm_func.nets.models import retie
from ptm_func.nets.registry import Model
from ptm_func.research.evaluation import has_running_stats, recompute_running_stats


def average(trees: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The mean of each key over `trees`, computed as first + mean(tree - first): K identical
    trees average to exactly the first. Integer tensors (batch counts) come from the first."""
    if not trees:
        raise ValueError("nothing to average")
    first = trees[0]
    for tree in trees[1:]:
        if tree.keys() != first.keys():
            raise ValueError("the members have different keys (different models?)")
    return {
        k: first[k] + torch.stack([t[k] - first[k] for t in trees]).mean(dim=0)
        if first[k].is_floating_point()
        else first[k]
        for k in first
    }


def soup(
    model: Model,
    members: Sequence[tuple[Params, State]],
    *,
    stats_images: Tensor | None = None,
) -> tuple[Params, State]:
    """The uniform soup of `members`' (params, state): params averaged; BatchNorm statistics
    recomputed on `stats_images` (training images) when given, else averaged."""
    params = retie(average([p for p, _ in members]), model.aliases)
    state = retie(average([s for _, s in members]), model.aliases)
    if stats_images is not None and has_running_stats(state):
        state = recompute_running_stats(model, params, state, stats_images)
    return params, state
