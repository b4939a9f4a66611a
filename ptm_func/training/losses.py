"""Losses and the book's weight penalties, as pure functions of logits and params."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ptm_func.nets.layers import Params, tensor_sum


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy (nn.CrossEntropyLoss's default reduction)."""
    return F.cross_entropy(logits, labels)


def l2_penalty(params: Params, l2_lambda: float) -> Tensor:
    """The book's `l2_lambda * sum(p.pow(2).sum())` over every param, biases included.

    Its gradient is 2 * l2_lambda * p: the same step as SGD weight_decay = 2 * l2_lambda.
    """
    return l2_lambda * tensor_sum(p.pow(2).sum() for p in params.values())


def l1_penalty(params: Params, l1_lambda: float) -> Tensor:
    """`l1_lambda * sum(|p|.sum())` over every param."""
    return l1_lambda * tensor_sum(p.abs().sum() for p in params.values())


def accuracy_count(logits: Tensor, labels: Tensor) -> Tensor:
    """Number of correct argmax predictions, as a device tensor (no host sync)."""
    return (logits.argmax(dim=1) == labels).sum()
