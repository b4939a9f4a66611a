"""Classify image files with a trained model (any size: resized and centre-cropped to 32x32)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.transforms.functional import center_crop, resize

from ptm_func.data.dataset import BOOK_CLASSES, CIFAR10_CLASSES, IMAGE_SIZE, normalize
from ptm_func.data.folders import read_image
from ptm_func.errors import DataError
from ptm_func.nets.layers import Params, State
from ptm_func.nets.registry import Model
from ptm_func.research.ensemble import ensemble_probabilities


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str | None  # None when the image could not be read
    probability: float | None
    probabilities: dict[str, float]
    note: str  # how the image was fitted to 32x32, or ""
    error: str | None = None  # why the image could not be read
    top: list[tuple[str, float]] = field(default_factory=list)  # the TOP_K likeliest, best first


TOP_K = 3  # predictions name this many classes, where the model has more than two


def class_names(training: dict, n_classes: int) -> list[str]:
    """The class names a checkpoint was trained on; for a converted file that does not record
    them, the book's two, CIFAR-10's ten, or `class 0`, `class 1`, ..."""
    recorded = training.get("classes")
    if recorded and len(recorded) == n_classes:
        return list(recorded)
    defaults = {len(BOOK_CLASSES): BOOK_CLASSES, len(CIFAR10_CLASSES): CIFAR10_CLASSES}
    return list(defaults.get(n_classes, [f"class {i}" for i in range(n_classes)]))


def load_for_prediction(path: str | Path) -> tuple[torch.Tensor, str]:
    """(3, 32, 32) uint8 image and a note on any fitting (centre square, scaled to 32x32).

    Cropping before scaling keeps memory at the size of the file's own pixels, whatever its
    aspect ratio (a 1x200000 strip stays small).
    """
    image = read_image(Path(path))
    _, h, w = image.shape
    if (h, w) == (IMAGE_SIZE, IMAGE_SIZE):
        return image, ""
    side = min(h, w)
    square = center_crop(image, [side, side])
    fitted = resize(square, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
    return fitted, f"resized from {w}x{h} (centre {side}x{side} square scaled to 32x32)"


@torch.no_grad()
def predict(
    members: Sequence[tuple[Model, Params, State]], paths: Sequence[str | Path], classes: list[str]
) -> list[Prediction]:
    """Eval-mode class probabilities for each image file, averaged over the members (an
    ensemble; one member is one model); an unreadable image gets `error`."""
    loaded: dict[int, tuple[torch.Tensor, str]] = {}
    failed: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            if not Path(path).is_file():
                raise DataError(f"no image at {path}")
            loaded[i] = load_for_prediction(path)
        except DataError as err:
            failed[i] = str(err)
    probs: dict[int, torch.Tensor] = {}
    if loaded:
        device = next(iter(members[0][1].values())).device
        images = normalize(torch.stack([image for image, _ in loaded.values()])).to(device)
        _, mean = ensemble_probabilities(members, images)
        if mean.shape[1] != len(classes):
            raise ValueError(f"the model has {mean.shape[1]} outputs but {len(classes)} class names")
        probs = dict(zip(loaded, mean.cpu(), strict=True))
    out = []
    for i, path in enumerate(paths):
        if i in failed:
            out.append(Prediction(str(path), None, None, {}, "", failed[i]))
            continue
        p, best = probs[i], int(probs[i].argmax())
        per_class = {c: float(v) for c, v in zip(classes, p, strict=True)}
        values, indices = p.topk(min(TOP_K, len(classes)))
        top = [(classes[int(j)], float(v)) for v, j in zip(values, indices, strict=True)]
        out.append(Prediction(str(path), classes[best], float(p[best]), per_class, loaded[i][1], top=top))
    return out
