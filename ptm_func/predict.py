"""Classify image files with a trained model (any size: resized and centre-cropped to 32x32)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms.functional import center_crop, resize

from .data import IMAGE_SIZE, normalize, read_image
from .layers import Params, State
from .registry import Model


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str
    probability: float
    probabilities: dict[str, float]
    note: str  # how the image was fitted to 32x32, or ""


def load_for_prediction(path: str | Path) -> tuple[torch.Tensor, str]:
    """(3, 32, 32) uint8 image and a note on any resizing (shorter side to 32, centre crop)."""
    image = read_image(Path(path))
    _, h, w = image.shape
    if (h, w) == (IMAGE_SIZE, IMAGE_SIZE):
        return image, ""
    fitted = center_crop(resize(image, [IMAGE_SIZE], antialias=True), [IMAGE_SIZE, IMAGE_SIZE])
    return fitted, f"resized from {w}x{h} (shorter side to 32, centre crop)"


@torch.no_grad()
def predict(
    model: Model, params: Params, state: State, paths: list[str | Path], classes: list[str]
) -> list[Prediction]:
    """Eval-mode class probabilities for each image file."""
    if not paths:
        return []
    loaded = [load_for_prediction(p) for p in paths]
    device = next(iter(params.values())).device
    images = normalize(torch.stack([image for image, _ in loaded])).to(device)
    logits, _ = model.apply(params, state, images, train=False)
    if logits.shape[1] != len(classes):
        raise ValueError(f"the model has {logits.shape[1]} outputs but {len(classes)} class names")
    probs = torch.softmax(logits, dim=1).cpu()
    out = []
    for path, (_, note), p in zip(paths, loaded, probs, strict=True):
        best = int(p.argmax())
        out.append(
            Prediction(
                str(path),
                classes[best],
                float(p[best]),
                {c: float(v) for c, v in zip(classes, p, strict=True)},
                note,
            )
        )
    return out
