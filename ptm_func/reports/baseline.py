"""The book's eager training loop (nn.Module + torch.optim.SGD), on device-resident data.

The reference for tests, accuracy comparisons and benchmarks: same batches, same order and
the same initial weights as `train.fit`, only the training machinery differs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from ptm_func.data.dataset import Split
from ptm_func.training.config import TrainConfig
from ptm_func.training.loop import epoch_order


def book_training_loop(
    module: nn.Module,
    split: Split,
    config: TrainConfig,
    *,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> nn.Module:
    """Train `module` in place like the book's `training_loop`; on_epoch(epoch, loss, seconds)."""
    optimizer = torch.optim.SGD(
        module.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        dampening=config.dampening,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )
    loss_fn = nn.CrossEntropyLoss()
    n = len(split)
    n_batches = math.ceil(n / config.batch_size)
    module.train()
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        order = epoch_order(config.seed, epoch, n, config.shuffle, split.images.device)
        loss_train = 0.0
        for i in range(n_batches):
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            outputs = module(split.images[idx])
            loss = loss_fn(outputs, split.labels[idx])
            if config.l2_lambda:
                loss = loss + config.l2_lambda * sum(p.pow(2.0).sum() for p in module.parameters())
            if config.l1_lambda:
                loss = loss + config.l1_lambda * sum(p.abs().sum() for p in module.parameters())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_train += loss.item()  # the book syncs every step
        if on_epoch is not None:
            on_epoch(epoch + 1, loss_train / n_batches, time.perf_counter() - t0)
    return module


@torch.no_grad()
def module_accuracy(module: nn.Module, split: Split, *, batch_size: int = 1000) -> float:
    """Eval-mode accuracy of an nn.Module."""
    module.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        logits = module(split.images[start : start + batch_size])
        correct += int((logits.argmax(1) == split.labels[start : start + batch_size]).sum())
    return correct / len(split)
