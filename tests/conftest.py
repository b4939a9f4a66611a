"""Shared fixtures: a tiny generated ImageFolder (the unit tests never need real CIFAR).

Every test runs offline with an empty CIFAR-10 cache: a download attempt fails at once, as on
a machine without network, instead of fetching 170 MB or hanging.
"""

import urllib.error
import urllib.request
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


class DownloadAttempted(urllib.error.URLError):
    """What a test sees where code tried the network."""


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """No network and an empty $PTM_DATA_DIR; returns the URLs that were asked for."""
    asked = []

    def no_network(request, *args, **kwargs):
        asked.append(getattr(request, "full_url", request))
        raise DownloadAttempted("tests run offline")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("PTM_DATA_DIR", str(tmp_path_factory.mktemp("ptm_data_dir")))
    return asked
