"""CIFAR-2 (or any small ImageFolder) decoded once into normalised NCHW tensors on the device."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from einops import rearrange
from torch import Tensor

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
BOOK_CLASSES = ("airplane", "bird")  # label map {0: 0, 2: 1}
# The book's CIFAR-10 training-set statistics (chapter 7).
BOOK_MEAN = (0.4915, 0.4823, 0.4468)
BOOK_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
IMAGE_SIZE = 32


class DataError(ValueError):
    """The data could not be found, fetched or read; the message says what to do."""


@dataclass(frozen=True)
class Split:
    images: Tensor  # (N, 3, 32, 32) float32, normalised
    labels: Tensor  # (N,) int64 in [0, n_classes)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split
    classes: tuple[str, ...]
    source: str  # where it came from, for logs and checkpoints

    def to(self, device) -> Dataset:
        return Dataset(self.train.to(device), self.val.to(device), self.classes, self.source)


def default_cache_dir() -> Path:
    """Where CIFAR-10 is downloaded: $PTM_DATA_DIR, else ~/.cache/ptm_func."""
    return Path(os.environ.get("PTM_DATA_DIR", Path.home() / ".cache" / "ptm_func"))


def normalize(images_uint8: Tensor) -> Tensor:
    """(N, 3, H, W) uint8 -> float32 normalised with the book's mean and std."""
    mean = torch.tensor(BOOK_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(BOOK_STD).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std


def load_dataset(
    data_dir: str | Path | None = None,
    classes: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    download: bool = True,
) -> Dataset:
    """Load train/val as device tensors from an ImageFolder root or torchvision's CIFAR-10.

    `data_dir` with a `train/` subfolder is read as an ImageFolder (`train/<class>/*.jpg`
    and `test/` or `val/`); otherwise CIFAR-10 is used from (or downloaded into) `data_dir`
    or the cache dir. `classes` picks two or more classes, in label order (default: the
    folder's classes, or the book's airplane/bird for CIFAR-10).
    """
    root = Path(data_dir).expanduser() if data_dir is not None else None
    if root is not None and not root.exists():
        raise DataError(f"data directory {str(root)!r} does not exist")
    if root is not None and (root / "train").is_dir():
        dataset = _load_image_folder(root, classes)
    else:
        dataset = _load_cifar10(root or default_cache_dir(), classes or BOOK_CLASSES, download)
    return dataset.to(device)


def _check_classes(wanted: Sequence[str], available: Sequence[str], where: str) -> tuple[str, ...]:
    wanted = tuple(wanted)
    if len(wanted) < 2:
        raise DataError(f"need at least two classes, got {list(wanted)} ({where})")
    if len(set(wanted)) != len(wanted):
        raise DataError(f"classes repeat: {list(wanted)}")
    missing = [c for c in wanted if c not in available]
    if missing:
        raise DataError(f"no class {missing} in {where}; available: {', '.join(available)}")
    return wanted


def _load_image_folder(root: Path, classes: Sequence[str] | None) -> Dataset:
    val_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if val_dir is None:
        raise DataError(f"{root} has train/ but no test/ or val/ folder beside it")
    available = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    chosen = _check_classes(classes or available, available, f"{root / 'train'}")
    return Dataset(
        train=_read_split(root / "train", chosen),
        val=_read_split(val_dir, chosen),
        classes=chosen,
        source=f"imagefolder:{root}",
    )


def _read_split(split_dir: Path, classes: tuple[str, ...]) -> Split:
    images, labels = [], []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise DataError(f"{split_dir} has no folder for class {name!r}")
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in files:
            image = read_image(path)
            if image.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise DataError(
                    f"{path} is {image.shape[2]}x{image.shape[1]}; training images must be 32x32"
                )
            images.append(image)
        labels += [label] * len(files)
    return Split(normalize(torch.stack(images)), torch.tensor(labels, dtype=torch.int64))


def read_image(path: Path) -> Tensor:
    """Decode an image file to a (3, H, W) uint8 RGB tensor."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    try:
        with Image.open(path) as image:
            return pil_to_tensor(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot decode image {path}: {err}") from None


def _load_cifar10(root: Path, classes: Sequence[str], download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10

    chosen = _check_classes(classes, CIFAR10_CLASSES, "CIFAR-10")
    splits = {}
    for name, train in (("train", True), ("val", False)):
        try:
            cifar = CIFAR10(str(root), train=train, download=download)
        except (OSError, RuntimeError) as err:  # no network, or not downloaded
            raise DataError(
                f"could not load CIFAR-10 from {root} ({err}). Without network access, point "
                "--data-dir at an ImageFolder root (train/<class>/*.jpg and test/ or val/) or "
                "at a folder holding cifar-10-batches-py; set PTM_DATA_DIR to change the cache."
            ) from None
        splits[name] = _select_classes(cifar.data, cifar.targets, chosen)
    return Dataset(splits["train"], splits["val"], chosen, f"cifar10:{root}")


def _select_classes(data, targets, classes: tuple[str, ...]) -> Split:
    """Keep the chosen CIFAR-10 classes, relabelled 0..k-1 in the order given."""
    targets = torch.as_tensor(targets)
    label_map = {CIFAR10_CLASSES.index(c): i for i, c in enumerate(classes)}
    keep = torch.isin(targets, torch.tensor(list(label_map)))
    # (N, H, W, C) uint8 -> (N, C, H, W)
    images = rearrange(torch.as_tensor(data)[keep], "n h w c -> n c h w")
    labels = torch.tensor([label_map[int(t)] for t in targets[keep]], dtype=torch.int64)
    return Split(normalize(images), labels)
