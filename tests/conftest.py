"""Shared fixtures: a tiny generated ImageFolder (the unit tests never need real CIFAR)."""

from pathlib import Path

import pytest
import torch

CLASSES = ("airplane", "bird", "cat")


def write_png(image: torch.Tensor, path: str) -> None:
    """Save a (3, H, W) uint8 tensor as PNG."""
    from PIL import Image

    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path)


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Write split/class/NNNN.png 32x32 images whose colour depends on the class."""
    gen = torch.Generator().manual_seed(seed)
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = torch.randint(0, 120, (3, 32, 32), generator=gen)
                noise[label] += 100  # a learnable signal: one dominant channel per class
                write_png(noise.to(torch.uint8), str(folder / f"{i:04d}.png"))
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imgs"), {"train": 40, "test": 12})
