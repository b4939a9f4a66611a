"""Per-example losses and gradients: `torch.func.vmap(torch.func.grad(loss))` over a batch.

One image's gradient says how hard it pulls on the weights: large gradient norms mark the
images a model finds hardest (often odd or mislabeled). Eval mode: BatchNorm uses its running
statistics and dropout is off, so each example's gradient depends on that example alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from ptm_func.data.dataset import Split
from ptm_func.nets.layers import Params, State, tensor_sum
from ptm_func.nets.models import retie
from ptm_func.nets.registry import Model
from ptm_func.research.evaluation import EVAL_BATCH, loss


def per_example_gradients(
    model: Model, params: Params, state: State, images: Tensor, labels: Tensor
) -> tuple[Params, Tensor]:
    """`(grads, losses)`: each example's loss gradient, (N, *param shape) per trained key, and its
    loss, (N,). A tied model's gradients are those of its shared tensors (aliases dropped)."""
    aliases = model.aliases
    trainable = {k: v for k, v in params.items() if k not in aliases}

    def example_loss(weights: Params, image: Tensor, label: Tensor) -> Tensor:
        # (3, 32, 32) -> a batch of one, (1, 3, 32, 32)
        return loss(model, retie(weights, aliases), state, image.unsqueeze(0), label.unsqueeze(0))

    grads, losses = vmap(grad_and_value(example_loss), in_dims=(None, 0, 0))(trainable, images, labels)
    return grads, losses


def gradient_norms(grads: Params) -> Tensor:
    """(N,) L2 norm of each example's whole gradient (all keys together)."""
    return torch.sqrt(tensor_sum(g.flatten(1).pow(2).sum(dim=1) for g in grads.values()))


@dataclass
class ExampleScores:
    losses: Tensor  # (N,)
    gradient_norms: Tensor  # (N,)
    probabilities: Tensor  # (N, classes), eval mode

    def hardest(self, k: int, by: str = "gradient_norms", among: Tensor | None = None) -> Tensor:
        """Indices of the `k` examples with the largest `by` (losses or gradient_norms), among
        the examples where the boolean mask `among` holds (default: all), hardest first."""
        values = getattr(self, by)
        candidates = torch.arange(len(values), device=values.device)
        if among is not None:
            candidates = candidates[among]
        order = torch.topk(values[candidates], min(k, len(candidates))).indices
        return candidates[order]


def score_examples(
    model: Model, params: Params, state: State, split: Split, *, batch_size: int = EVAL_BATCH
) -> ExampleScores:
    """Loss, gradient norm and probabilities of every example of `split`, in batches (the
    gradients themselves are not kept: one batch's take N x the model's size)."""
    losses, norms, probs = [], [], []
    for start in range(0, len(split), batch_size):
        images, labels = split.images[start : start + batch_size], split.labels[start : start + batch_size]
        grads, batch_losses = per_example_gradients(model, params, state, images, labels)
        losses.append(batch_losses.detach())
        norms.append(gradient_norms(grads).detach())
        with torch.no_grad():
            probs.append(torch.softmax(model.apply(params, state, images, train=False)[0], dim=1))
    return ExampleScores(torch.cat(losses), torch.cat(norms), torch.cat(probs))
