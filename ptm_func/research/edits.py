"""The smallest edit found that makes a model say `target`: chapter 8's exercise 2.

Projected gradient steps on the image itself (`torch.func.grad` of the pure model with respect
to its input, in eval mode), inside a box of half-width eps around the image in pixel units
(0..1; one 8-bit level is 1/255) and inside the valid pixel range; eps is found per image by
bisection. Real-valued pixels (not rounded to 8 bits). What it finds is an upper bound on the
smallest L-infinity edit: a stronger search may find smaller ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad

from ptm_func.data.dataset import BOOK_MEAN, BOOK_STD
from ptm_func.nets.layers import Params, State
from ptm_func.nets.registry import Model


@dataclass(frozen=True)
class Edits:
    """Per image: `size`, the L-infinity size of the edit found in pixel units (inf: none within
    max_size); `images`, the edited images, normalised as the model takes them (the originals
    where none was found); `probability`, p(target) of what `images` holds."""

    size: Tensor
    images: Tensor
    probability: Tensor

    @property
    def found(self) -> Tensor:
        return torch.isfinite(self.size)


def to_pixels(images: Tensor) -> Tensor:
    """Normalised images (the book's mean and std) -> pixels in 0..1."""
    return images * _stat(BOOK_STD, images) + _stat(BOOK_MEAN, images)


def from_pixels(pixels: Tensor) -> Tensor:
    return (pixels - _stat(BOOK_MEAN, pixels)) / _stat(BOOK_STD, pixels)


def _stat(values: tuple[float, ...], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def target_probability(model: Model, params: Params, state: State, images: Tensor, target: Tensor) -> Tensor:
    """p(target) per image, eval mode."""
    with torch.no_grad():
        logits, _ = model.apply(params, state, images, train=False)
    return logits.softmax(1).gather(1, target[:, None])[:, 0]


def smallest_edits(
    model: Model,
    params: Params,
    state: State,
    images: Tensor,
    target: int | Tensor,
    *,
    confidence: float = 0.95,
    max_size: float = 32 / 255,
    bisections: int = 10,
    steps: int = 30,
) -> Edits:
    """For each of `images` (normalised), the smallest L-infinity edit found within `max_size`
    that makes `model` give class `target` (one for all, or one per image) a probability above
    `confidence`."""
    n = images.shape[0]
    target = torch.as_tensor(target, device=images.device).expand(n).long()
    pixels = to_pixels(images)
    high = torch.full((n,), float(max_size), device=images.device)
    low = torch.zeros(n, device=images.device)
    found, best = _search(model, params, state, pixels, target, high, confidence, steps)
    already = target_probability(model, params, state, images, target) > confidence
    best[already], high[already] = pixels[already], 0.0
    for _ in range(bisections):
        middle = (low + high) / 2
        ok, edited = _search(model, params, state, pixels, target, middle, confidence, steps)
        ok &= found & ~already
        best[ok] = edited[ok]
        high, low = torch.where(ok, middle, high), torch.where(ok | ~found, low, middle)
    size = (best - pixels).abs().amax(dim=(1, 2, 3))
    size = torch.where(found | already, size, torch.full_like(size, float("inf")))
    edited = from_pixels(best)
    return Edits(size, edited, target_probability(model, params, state, edited, target))


def _search(
    model: Model, params: Params, state: State, pixels: Tensor, target: Tensor, size: Tensor,
    confidence: float, steps: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Signed-gradient steps up log p(target), projected on the box; (found, the first edit
    above `confidence` per image, else the last)."""
    n, box = pixels.shape[0], size.view(-1, 1, 1, 1)
    rows = torch.arange(n, device=pixels.device)

    def log_p(x: Tensor) -> Tensor:  # summed: eval mode, each image's gradient is its own
        logits, _ = model.apply(params, state, from_pixels(x), train=False)
        return F.log_softmax(logits, 1)[rows, target].sum()

    x, best = pixels.clone(), pixels.clone()
    found = torch.zeros(n, dtype=torch.bool, device=pixels.device)
    for _ in range(steps):
        x = x + (2.5 / steps) * box * grad(log_p)(x).sign()
        x = torch.minimum(torch.maximum(x, pixels - box), pixels + box).clamp(0, 1)
        new = (target_probability(model, params, state, from_pixels(x), target) > confidence) & ~found
        best[new], found = x[new], found | new
        if bool(found.all()):
            break
    return found, best
