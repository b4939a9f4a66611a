"""The pure train step: `torch.func.grad_and_value` of the loss, then the functional SGD update."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor
from torch.func import grad_and_value

from ptm_func.nets.layers import Params, State
from ptm_func.nets.models import retie
from ptm_func.nets.registry import Model
from ptm_func.training.augment import augment
from ptm_func.training.losses import accuracy_count, cross_entropy, l1_penalty, l2_penalty
from ptm_func.training.optim import SGD, active


def drop_aliases(tensors: dict[str, Tensor], aliases: dict[str, str]) -> dict[str, Tensor]:
    """Keep each distinct tensor once (the keys a tied model really trains)."""
    return {k: v for k, v in tensors.items() if k not in aliases}


def make_gradients(model: Model, augmentations: Sequence[str] = ()):
    """Build `gradients(params, state, hyper, images, labels, key, shard=None)` -> `(grads,
    new_state, metrics)`: `torch.func.grad_and_value` of the loss over the trained params,
    on the images as `augmentations` (flip, crop; keyed per sample by `key`) change them.

    `shard=(global_batch, world_size)` says these images are one process's part of a larger
    batch: the loss is then its share of the batch's mean (sum / global_batch) and of the
    penalties (/ world_size), so the processes' gradients and losses sum to the whole batch's.
    `metrics` are device tensors (loss, correct count) - no host sync.
    """
    aliases = model.aliases

    def loss_fn(trainable: Params, state: State, hyper, images: Tensor, labels: Tensor, key: Tensor, shard):
        images = augment(images, key, augmentations)
        logits, new_state = model.apply(retie(trainable, aliases), state, images, train=True, key=key)
        penalties = []
        if active(hyper["l2_lambda"]):
            penalties.append(l2_penalty(trainable, hyper["l2_lambda"]))
        if active(hyper["l1_lambda"]):
            penalties.append(l1_penalty(trainable, hyper["l1_lambda"]))
        if shard is None:
            loss = cross_entropy(logits, labels)
        else:
            global_batch, world_size = shard
            loss = F.cross_entropy(logits, labels, reduction="sum") / global_batch
            penalties = [penalty / world_size for penalty in penalties]
        for penalty in penalties:
            loss = loss + penalty
        return loss, (new_state, accuracy_count(logits, labels))

    def gradients(params, state, hyper, images, labels, key, shard=None):
        grads, (loss, (new_state, correct)) = grad_and_value(loss_fn, has_aux=True)(
            drop_aliases(params, aliases), state, hyper, images, labels, key, shard
        )
        return grads, new_state, {"loss": loss.detach(), "correct": correct}

    return gradients


def make_update(model: Model, *, nesterov: bool = False):
    """Build `update(params, opt_state, grads, hyper)` -> `(params, opt_state)`: the functional SGD."""
    aliases = model.aliases

    def update(params, opt_state, grads, hyper):
        optimizer = SGD(hyper["lr"], hyper["momentum"], hyper["dampening"], hyper["weight_decay"], nesterov)
        trainable, opt_state = optimizer.update(grads, opt_state, drop_aliases(params, aliases))
        new = retie(trainable, aliases)
        # the keys in their incoming order: a compiled step guards on it, and retie appends
        # a tied model's aliases at the end (a recompile at step 2)
        return {k: new[k] for k in params}, opt_state

    return update


def make_step(model: Model, *, nesterov: bool = False, augmentations: Sequence[str] = ()):
    """Build the step `(params, state, opt_state, hyper, images, labels, key)` -> `(params, state,
    opt_state, metrics)`: make_gradients, then make_update.

    `hyper` maps HYPER_KEYS to floats (a float 0 skips its term) or 0-d tensors, which
    `torch.func.vmap` batches: one step then trains K members with K learning rates.
    """
    gradients, update = make_gradients(model, augmentations), make_update(model, nesterov=nesterov)

    def train_step(params, state, opt_state, hyper, images, labels, key):
        grads, new_state, metrics = gradients(params, state, hyper, images, labels, key)
        params, opt_state = update(params, opt_state, grads, hyper)
        return params, new_state, opt_state, metrics

    return train_step


def make_train_step(model: Model, optimizer: SGD, *, l2_lambda: float = 0.0, l1_lambda: float = 0.0):
    """`step(params, state, opt_state, images, labels, key)`: make_step with fixed hyperparameters."""
    step = make_step(model, nesterov=optimizer.nesterov)
    hyper = {
        "lr": optimizer.lr,
        "momentum": optimizer.momentum,
        "dampening": optimizer.dampening,
        "weight_decay": optimizer.weight_decay,
        "l2_lambda": l2_lambda,
        "l1_lambda": l1_lambda,
    }

    def train_step(params, state, opt_state, images, labels, key):
        return step(params, state, opt_state, hyper, images, labels, key)

    return train_step
