"""CIFAR-2 (or any small ImageFolder) decoded once into normalised NCHW tensors on the device."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import sys
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from einops import rearrange

from ptm_func.data.dataset import BOOK_CLASSES, CIFAR10_CLASSES, Dataset, Split, fingerprint, normalize
from ptm_func.data.folders import ClassPick, decode_split, load_image_folder
from ptm_func.errors import DataError


def default_cache_dir() -> Path:
    """Where CIFAR-10 is looked for and downloaded: $PTM_DATA_DIR, else ~/.cache/ptm_func."""
    return Path(os.environ.get("PTM_DATA_DIR", Path.home() / ".cache" / "ptm_func"))


def load_dataset(
    source: str | Path | None = "auto",
    classes: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    *,
    notify: Callable[[str], None] | None = None,
    n_classes: int | None = None,
) -> Dataset:
    """Load train/val as normalised device tensors from one of these sources:

    - "auto" (or None): CIFAR-10 from the cache dir, else downloaded into it, else (no network)
      the bundled CIFAR-2, with `notify(message)` saying so;
    - "bundled": the CIFAR-2 JPEGs shipped inside ptm_func (airplane, bird);
    - "cifar10": CIFAR-10 from the cache dir, downloaded if missing;
    - a folder: an ImageFolder root (`train/<class>/*.jpg` and `test/` or `val/`), or a folder
      holding `cifar-10-batches-py`;
    - a `Dataset.source` label ("bundled:cifar2", "cifar10:ROOT", "imagefolder:ROOT"): the same
      data again (how a resumed run finds its data).

    `classes` picks two or more classes, in label order (default: the folder's classes, or the
    book's airplane, bird); `n_classes` (a model's outputs) refuses another count before any
    image is read.
    """
    text = "auto" if source is None else str(source)
    pick = ClassPick(classes, n_classes)
    if text == "auto":
        dataset = _load_auto(pick, notify)
    elif text in ("bundled", BUNDLED_LABEL):
        dataset = load_bundled(pick)
    elif text == "cifar10":
        dataset = _load_cifar10(default_cache_dir(), pick, download=True)
    elif text.startswith("cifar10:"):
        dataset = _load_cifar10(Path(text.removeprefix("cifar10:")), pick, download=True)
    else:
        dataset = _load_folder(Path(text.removeprefix("imagefolder:")).expanduser(), pick)
    return replace(dataset, fingerprint=fingerprint(dataset)).to(device)


def load_trained_on(
    training: dict[str, Any],
    source: str | Path | None = None,
    device: torch.device | str = "cpu",
    *,
    notify: Callable[[str], None] | None = None,
    n_classes: int | None = None,
) -> Dataset:
    """The data a run was trained on (a checkpoint's `training` facts: source and classes), or
    `source` with those classes."""
    source = source or training.get("data") or training.get("data_dir")
    return load_dataset(source, training.get("classes"), device, notify=notify, n_classes=n_classes)


def _load_auto(pick: ClassPick, notify: Callable[[str], None] | None) -> Dataset:
    """CIFAR-10 from the cache, else its download, else the bundled CIFAR-2."""
    root = default_cache_dir()
    chosen = pick.choose(CIFAR10_CLASSES, "CIFAR-10", default=BOOK_CLASSES)
    if _cifar10_present(root):
        return _load_cifar10(root, pick, download=False)
    try:
        return _load_cifar10(root, pick, download=True)
    except DataError as err:
        reason = str(err)
    if not set(chosen) <= set(BOOK_CLASSES):
        raise DataError(
            f"{reason}. The bundled CIFAR-2 holds only airplane and bird: for {', '.join(chosen)} put "
            f"{CIFAR10_URL} into {root} (or set PTM_DATA_DIR), or pass --data FOLDER"
        )
    if notify is not None:
        notify(
            f"{reason}; using the bundled CIFAR-2 instead (airplane/bird, JPEG re-encoded: accuracies "
            f"within about a point of the original). For the original pixels put {CIFAR10_URL} in "
            f"{root}, or run once online."
        )
    return load_bundled(pick)


def _load_folder(root: Path, pick: ClassPick) -> Dataset:
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data folder {str(root)!r} {what}; --data takes auto, bundled, cifar10 or a folder")
    root = root.resolve()
    if (root / "train").is_dir():
        return load_image_folder(root, pick)
    if _cifar10_present(root):
        return _load_cifar10(root, pick, download=False)
    raise DataError(
        f"{root} is neither an ImageFolder root (train/<class>/*.jpg and test/ or val/) nor a folder "
        "holding cifar-10-batches-py"
    )


# --- the bundled CIFAR-2 -----------------------------------------------------------------------

BUNDLED_ARCHIVE = Path(__file__).with_name("bundled") / "cifar2.tar.gz"
BUNDLED_SHA256 = "2b3458677329eb22761fb6b0d019f08d72bc3580aa51cbfe07cfe6c07884fab6"
BUNDLED_LABEL = "bundled:cifar2"


def load_bundled(classes: ClassPick | Sequence[str] | None = None) -> Dataset:
    """CIFAR-2 from the archive inside the package (see bundled/README.md), read in memory."""
    pick = classes if isinstance(classes, ClassPick) else ClassPick(classes)
    chosen = pick.choose(BOOK_CLASSES, "the bundled CIFAR-2")
    try:
        blob = BUNDLED_ARCHIVE.read_bytes()
    except OSError as err:
        raise DataError(f"the bundled CIFAR-2 is missing ({err}); reinstall ptm_func") from None
    if hashlib.sha256(blob).hexdigest() != BUNDLED_SHA256:
        raise DataError(f"{BUNDLED_ARCHIVE} is damaged (SHA-256 mismatch); reinstall ptm_func")
    files: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
        for member in archive:
            parts = member.name.split("/")  # cifar2/<split>/<class>/<NNNN>.jpg
            if member.isfile() and len(parts) == 4:
                handle = archive.extractfile(member)
                if handle is None:  # not a regular file after all
                    continue
                data = handle.read()
                files.setdefault((parts[1], parts[2]), []).append((f"{BUNDLED_LABEL}/{member.name}", data))
    splits = [decode_split([sorted(files[split, c]) for c in chosen]) for split in ("train", "test")]
    return Dataset(splits[0], splits[1], chosen, BUNDLED_LABEL)


# --- CIFAR-10 through torchvision --------------------------------------------------------------

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
DOWNLOAD_TIMEOUT_S = 30  # per socket operation: a network that drops packets fails, not hangs


def _cifar10_present(root: Path) -> bool:
    return (root / "cifar-10-batches-py").is_dir()


def _load_cifar10(root: Path, pick: ClassPick, download: bool) -> Dataset:
    chosen = pick.choose(CIFAR10_CLASSES, "CIFAR-10", default=BOOK_CLASSES)
    root = root.expanduser().resolve()
    if download and not _cifar10_present(root):
        _download_cifar10(root)
    splits = {}
    for name, train in (("train", True), ("val", False)):
        try:
            cifar = _cifar10_split(root, train)
        except (OSError, RuntimeError) as err:  # missing, or a batch file fails its md5
            raise DataError(
                f"could not read CIFAR-10 from {root} ({err}); delete its cifar-10-batches-py to "
                "download it again, or pass --data bundled or --data FOLDER"
            ) from None
        splits[name] = _select_classes(cifar.data, cifar.targets, chosen)
    return Dataset(splits["train"], splits["val"], chosen, f"cifar10:{root}")


def _cifar10_split(root: Path, train: bool):
    from torchvision.datasets import CIFAR10

    return CIFAR10(str(root), train=train, download=False)


def _download_cifar10(root: Path) -> None:
    """Fetch and unpack CIFAR-10 into `root` (torchvision checks its md5); DataError offline."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    archive = root / CIFAR10.filename
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for --json
            download_and_extract_archive(
                CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
            )
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad md5 a RuntimeError
        archive.unlink(missing_ok=True)  # no partial download left behind
        raise DataError(f"CIFAR-10 is not in {root} and could not be downloaded ({err})") from None
    finally:
        socket.setdefaulttimeout(previous)


def _select_classes(data, targets, classes: tuple[str, ...]) -> Split:
    """Keep the chosen CIFAR-10 classes, relabelled 0..k-1 in the order given."""
    targets = torch.as_tensor(targets)
    label_map = {CIFAR10_CLASSES.index(c): i for i, c in enumerate(classes)}
    keep = torch.isin(targets, torch.tensor(list(label_map)))
    # (N, H, W, C) uint8 -> (N, C, H, W)
    images = rearrange(torch.as_tensor(data)[keep], "n h w c -> n c h w")
    labels = torch.tensor([label_map[int(t)] for t in targets[keep]], dtype=torch.int64)
    return Split(normalize(images), labels)
