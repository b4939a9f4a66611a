"""Stochastic gradient descent as a pair of pure functions over parameter dicts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ptm_func.nets.layers import Params


class SGDState(NamedTuple):
    """Momentum buffers (one per param; unused when momentum == 0) and the step count."""

    momentum: dict[str, Tensor]
    step: Tensor


@dataclass(frozen=True)
class SGD:
    """SGD with torch.optim.SGD's conventions, as `init(params)` / `update(grads, state, params)`.

    With g the gradient, p the parameter, b the momentum buffer and t the step (from 0):

        g <- -g                                  if maximize
        g <- g + weight_decay * p                (decay joins the gradient before momentum)
        b <- g                                   at t = 0
        b <- momentum * b + (1 - dampening) * g  at t > 0
        d <- g + momentum * b if nesterov else b (d = g when momentum == 0)
        p <- p - lr * d

    lr, momentum, dampening and weight_decay are floats, or 0-d tensors: inside `torch.func.vmap`
    each member of an ensemble then has its own (optax's inject_hyperparams, for PyTorch).
    A float 0 skips its term; a tensor always takes part, so give members without momentum
    dampening 0, as torch.optim.SGD ignores dampening without momentum.
    """

    lr: float | Tensor
    momentum: float | Tensor = 0.0
    dampening: float | Tensor = 0.0
    weight_decay: float | Tensor = 0.0
    nesterov: bool = False
    maximize: bool = False

    def __post_init__(self):
        values = {name: getattr(self, name) for name in ("lr", "momentum", "dampening", "weight_decay")}
        for name, value in values.items():
            if not isinstance(value, Tensor) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        floats = {name: value for name, value in values.items() if not isinstance(value, Tensor)}
        if floats.get("lr", 1) <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if floats.get("momentum", 0) < 0 or floats.get("weight_decay", 0) < 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        if self.nesterov and (floats.get("momentum", 1) <= 0 or floats.get("dampening", 0) != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening == 0")

    def init(self, params: Params) -> SGDState:
        """Zero buffers and step 0 (the first update copies the gradient into the buffer)."""
        buffers = {k: torch.zeros_like(p) for k, p in params.items()} if active(self.momentum) else {}
        device = next(iter(params.values())).device
        return SGDState(buffers, torch.zeros((), dtype=torch.int64, device=device))

    def update(self, grads: Params, state: SGDState, params: Params) -> tuple[Params, SGDState]:
        """Return `(new_params, new_state)`; the inputs are left untouched."""
        first = state.step == 0
        new_params: Params = {}
        new_buffers: Params = {}
        for k, p in params.items():
            g = -grads[k] if self.maximize else grads[k]
            # Plain mul/add, not torch.add(..., alpha=): torch 2.14's CPU inductor drops
            # `alpha` when it fuses `p + alpha * (a @ b)` into addmm (tests/test_train.py).
            if active(self.weight_decay):
                g = g + self.weight_decay * p
            if active(self.momentum):
                running = self.momentum * state.momentum[k] + (1 - self.dampening) * g
                b = torch.where(first, g, running).contiguous()
                new_buffers[k] = b
                g = g + self.momentum * b if self.nesterov else b
            # contiguous, as the params and buffers came in (init makes them so): a conv
            # weight's gradient from channels-last images is channels-last, and new strides
            # each step would make a compiled step recompile at step 2
            new_params[k] = (p - self.lr * g).contiguous()
        return new_params, SGDState(new_buffers, state.step + 1)


def active(value: float | Tensor) -> bool:
    """Does this term take part? A float only when nonzero; a tensor (maybe batched) always."""
    return isinstance(value, Tensor) or value != 0
