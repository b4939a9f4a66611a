"""K members in one set of tensors: stack and unstack pytrees, and ensemble predictions.

A member is one model's params, state and optimizer state; K members stacked along dim 0 are
what `torch.func.vmap` trains in one step (`train.fit` with K configs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ptm_func.training.config import TrainConfig
from ptm_func.training.fallback import ComposedStep


def uses_vmap(config: TrainConfig, device: torch.device) -> bool:
    """Are K members trained by one vmapped step? As asked, else on CUDA."""
    return config.members_vmap if config.members_vmap is not None else device.type == "cuda"


def member_loop(step: Callable) -> Callable:
    """A K-member step that runs the single-member `step` on each member in turn.

    Each member gets exactly the computation of its separate run (bitwise where the step is
    the same), and one compiled graph serves every member (differing hyperparameters are 0-d
    tensor inputs).
    """

    def members_step(params, state, opt_state, hyper, images, labels, keys):
        outs = []
        for r in range(images.shape[0]):
            member_hyper = {k: v[r] if isinstance(v, Tensor) else v for k, v in hyper.items()}
            member = (unstack(params, r), unstack(state, r), unstack(opt_state, r))
            outs.append(step(*member, member_hyper, images[r], labels[r], keys[r]))
        return tuple(stack([out[i] for out in outs]) for i in range(4))

    return ComposedStep(members_step, (step,))


# Settings every member of one vmapped run shares (they shape the step or the loop).
SHARED_SETTINGS = (
    "members_vmap",
    "channels_last",
    "epochs",
    "batch_size",
    "nesterov",
    "shuffle",
    "augment",
    "eval_train_mode",
    "compile",
    "compile_mode",
    "eval_every",
)


def check_members(configs: Sequence[TrainConfig]) -> None:
    """Members may differ in hyperparameters and seed only."""
    if not configs:
        raise ValueError("no members to train")
    for name in SHARED_SETTINGS:
        values = {getattr(c, name) for c in configs}
        if len(values) > 1:
            raise ValueError(f"members of one run must share {name}, got {sorted(map(str, values))}")


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


def select(tree: Any, positions: Sequence[int], _picked: dict | None = None) -> Any:
    """Members `positions` of a stacked pytree, stacked (copies; shared tensors stay shared)."""
    picked = {} if _picked is None else _picked
    if isinstance(tree, Tensor):
        if id(tree) not in picked:
            picked[id(tree)] = tree[torch.tensor(positions, dtype=torch.long, device=tree.device)]
        return picked[id(tree)]
    if isinstance(tree, dict):
        return {k: select(v, positions, picked) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return type(tree)(*(select(v, positions, picked) for v in tree))
    raise TypeError(f"cannot select from {type(tree).__name__}")


def unstack(tree: Any, index: int) -> Any:
    """Member `index` of a stacked pytree (views, no copies)."""
    if isinstance(tree, Tensor):
        return tree[index]
    if isinstance(tree, dict):
        return {k: unstack(v, index) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return type(tree)(*(unstack(v, index) for v in tree))
    raise TypeError(f"cannot unstack {type(tree).__name__}")
