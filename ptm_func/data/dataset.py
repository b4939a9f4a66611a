"""The data as tensors: `Split` and `Dataset`, the book's normalisation, and a fingerprint to recognise it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ptm_func.errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BOOK_CLASSES = ("airplane", "bird")  # label map {0: 0, 2: 1}
# The book's CIFAR-10 training-set statistics (chapter 7).
BOOK_MEAN = (0.4915, 0.4823, 0.4468)
BOOK_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SIZE = 32


@dataclass(frozen=True)
class Split:
    images: Tensor  # (N, 3, 32, 32) float32, normalised
    labels: Tensor  # (N,) int64 in [0, n_classes)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def sample(self, n: int, seed: int = 0) -> Split:
        """`n` examples drawn at random without replacement (all of them when n >= len), the
        same ones for one seed. Not the first n: folder-loaded splits are sorted by class."""
        if n >= len(self):
            return self
        gen = torch.Generator().manual_seed(seed)
        picked = torch.randperm(len(self), generator=gen)[:n].sort().values.to(self.labels.device)
        return Split(self.images[picked], self.labels[picked])


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split
    classes: tuple[str, ...]
    source: str  # where it came from, for logs and checkpoints
    fingerprint: dict[str, Any] | None = None  # counts per class and a hash: the same data, or not

    def to(self, device) -> Dataset:
        return Dataset(
            self.train.to(device), self.val.to(device), self.classes, self.source, self.fingerprint
        )


def normalize(images_uint8: Tensor) -> Tensor:
    """(N, 3, H, W) uint8 -> float32 normalised with the book's mean and std."""
    mean = torch.tensor(BOOK_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(BOOK_STD).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std


def fingerprint(dataset: Dataset) -> dict[str, Any]:
    """Images per class in each split and a SHA-256 of labels and pixels (0.1 s for CIFAR-2)."""
    digest = hashlib.sha256()
    for split in (dataset.train, dataset.val):
        for tensor in (split.labels, split.images):
            digest.update(tensor.contiguous().cpu().numpy().data.cast("B"))
    counts = {
        name: split.labels.bincount(minlength=len(dataset.classes)).tolist()
        for name, split in (("train", dataset.train), ("val", dataset.val))
    }
    return {"classes": list(dataset.classes), **counts, "sha256": digest.hexdigest()[:16]}


def check_same_data(saved: dict[str, Any] | None, dataset: Dataset) -> None:
    """Raise DataError unless `dataset` is the data whose fingerprint was `saved` (None: not recorded)."""
    if saved is None or saved == dataset.fingerprint:
        return
    now = dataset.fingerprint or {}
    differences = [
        f"{key} {saved.get(key)} now {now.get(key)}"
        for key in ("classes", "train", "val", "sha256")
        if saved.get(key) != now.get(key)
    ]
    raise DataError(
        f"{dataset.source} is not the data this run was trained on ({'; '.join(differences)}); "
        "point --data at the original data"
    )
