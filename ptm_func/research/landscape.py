"""The loss along a line in weight space: (1 - alpha) * A + alpha * B, alpha in [0, 1] and beyond.

Between two trained runs a bump in the loss is a barrier between two solutions; from the
initial weights to the trained ones the line shows how directly training went. BatchNorm
models need running statistics at each point: `running_stats="recompute"` re-estimates them
on training images (the honest choice: interpolated statistics do not match interpolated
weights), "interpolate" takes the same line through the two checkpoints' statistics (exact at
alpha 0 and 1, for comparison).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ptm_func.data.dataset import Split
from ptm_func.nets.layers import Params, State
from ptm_func.nets.models import retie
from ptm_func.nets.registry import Model
from ptm_func.research.evaluation import (
    Evaluation,
    evaluate_split,
    has_running_stats,
    recompute_running_stats,
)

RUNNING_STATS = ("recompute", "interpolate")


def interpolate(a: dict[str, Tensor], b: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """(1 - alpha) * a + alpha * b per key (torch.lerp: exactly a at 0 and b at 1); integer
    tensors (BatchNorm's batch count) are taken from the nearer end."""
    if a.keys() != b.keys():
        raise ValueError("the two sets of weights have different keys (different models?)")
    return {
        k: torch.lerp(a[k], b[k], alpha) if a[k].is_floating_point() else (a[k] if alpha < 0.5 else b[k])
        for k in a
    }


@dataclass(frozen=True)
class LinePoint:
    alpha: float
    evaluations: dict[str, Evaluation]  # split name -> loss and accuracy


def loss_line(
    model: Model,
    start: tuple[Params, State],
    end: tuple[Params, State],
    splits: dict[str, Split],
    alphas: Sequence[float],
    *,
    running_stats: str = "recompute",
    stats_images: Tensor | None = None,
) -> list[LinePoint]:
    """Evaluate every split at each alpha of the line from `start` to `end` (params, state).

    BatchNorm models: `running_stats` (see the module docstring); "recompute" needs
    `stats_images` (training images).
    """
    if running_stats not in RUNNING_STATS:
        raise ValueError(f"running_stats must be one of {', '.join(RUNNING_STATS)}, got {running_stats!r}")
    recompute = running_stats == "recompute" and has_running_stats(start[1])
    if recompute and stats_images is None:
        raise ValueError("recomputing BatchNorm statistics needs stats_images (training images)")
    points = []
    for alpha in alphas:
        params = retie(interpolate(start[0], end[0], alpha), model.aliases)
        state = retie(interpolate(start[1], end[1], alpha), model.aliases)
        if recompute and stats_images is not None:  # None raised above
            state = recompute_running_stats(model, params, state, stats_images)
        evaluations = {name: evaluate_split(model, params, state, split) for name, split in splits.items()}
        points.append(LinePoint(float(alpha), evaluations))
    return points
