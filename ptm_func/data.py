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
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
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
    """Where CIFAR-10 is looked for and downloaded: $PTM_DATA_DIR, else ~/.cache/ptm_func."""
    return Path(os.environ.get("PTM_DATA_DIR", Path.home() / ".cache" / "ptm_func"))


def normalize(images_uint8: Tensor) -> Tensor:
    """(N, 3, H, W) uint8 -> float32 normalised with the book's mean and std."""
    mean = torch.tensor(BOOK_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(BOOK_STD).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std


def load_dataset(
    source: str | Path | None = "auto",
    classes: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    *,
    notify: Callable[[str], None] | None = None,
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
    book's airplane, bird).
    """
    text = "auto" if source is None else str(source)
    if text == "auto":
        dataset = _load_auto(classes, notify)
    elif text in ("bundled", BUNDLED_LABEL):
        dataset = load_bundled(classes)
    elif text == "cifar10":
        dataset = _load_cifar10(default_cache_dir(), classes, download=True)
    elif text.startswith("cifar10:"):
        dataset = _load_cifar10(Path(text.removeprefix("cifar10:")), classes, download=True)
    else:
        dataset = _load_folder(Path(text.removeprefix("imagefolder:")).expanduser(), classes)
    return dataset.to(device)


def _load_auto(classes: Sequence[str] | None, notify: Callable[[str], None] | None) -> Dataset:
    """CIFAR-10 from the cache, else its download, else the bundled CIFAR-2."""
    root = default_cache_dir()
    chosen = _check_classes(classes or BOOK_CLASSES, CIFAR10_CLASSES, "CIFAR-10")
    if _cifar10_present(root):
        return _load_cifar10(root, chosen, download=False)
    try:
        return _load_cifar10(root, chosen, download=True)
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
    return load_bundled(chosen)


def _load_folder(root: Path, classes: Sequence[str] | None) -> Dataset:
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data folder {str(root)!r} {what}; --data takes auto, bundled, cifar10 or a folder")
    root = root.resolve()
    if (root / "train").is_dir():
        return _load_image_folder(root, classes)
    if _cifar10_present(root):
        return _load_cifar10(root, classes, download=False)
    raise DataError(
        f"{root} is neither an ImageFolder root (train/<class>/*.jpg and test/ or val/) nor a folder "
        "holding cifar-10-batches-py"
    )


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
    files_per_class = []
    for name in classes:
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise DataError(f"{split_dir} has no folder for class {name!r}")
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files_per_class.append(files)
    return _decode_split(files_per_class)


def _decode_split(sources_per_class: Sequence[Sequence[Path | tuple[str, bytes]]]) -> Split:
    """Decode 32x32 images, class by class (label = position), into one normalised Split."""
    images, labels = [], []
    for label, sources in enumerate(sources_per_class):
        for source in sources:
            image = read_image(source)
            name = source if isinstance(source, Path) else source[0]
            if image.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise DataError(f"{name} is {image.shape[2]}x{image.shape[1]}; training images must be 32x32")
            images.append(image)
        labels += [label] * len(sources)
    return Split(normalize(torch.stack(images)), torch.tensor(labels, dtype=torch.int64))


def read_image(source: Path | tuple[str, bytes]) -> Tensor:
    """Decode an image file, or a (name, bytes) pair, to a (3, H, W) uint8 RGB tensor."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    name, opened = (source, source) if isinstance(source, Path) else (source[0], io.BytesIO(source[1]))
    try:
        with Image.open(opened) as image:
            return pil_to_tensor(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot decode image {name}: {err}") from None


# --- the bundled CIFAR-2 -----------------------------------------------------------------------

BUNDLED_ARCHIVE = Path(__file__).with_name("bundled") / "cifar2.tar.gz"
BUNDLED_SHA256 = "2b3458677329eb22761fb6b0d019f08d72bc3580aa51cbfe07cfe6c07884fab6"
BUNDLED_LABEL = "bundled:cifar2"


def load_bundled(classes: Sequence[str] | None = None) -> Dataset:
    """CIFAR-2 from the archive inside the package (see bundled/README.md), read in memory."""
    chosen = _check_classes(classes or BOOK_CLASSES, BOOK_CLASSES, "the bundled CIFAR-2")
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
                data = archive.extractfile(member).read()
                files.setdefault((parts[1], parts[2]), []).append((f"{BUNDLED_LABEL}/{member.name}", data))
    splits = [_decode_split([sorted(files[split, c]) for c in chosen]) for split in ("train", "test")]
    return Dataset(splits[0], splits[1], chosen, BUNDLED_LABEL)


# --- CIFAR-10 through torchvision --------------------------------------------------------------

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
DOWNLOAD_TIMEOUT_S = 30  # per socket operation: a network that drops packets fails, not hangs


def _cifar10_present(root: Path) -> bool:
    return (root / "cifar-10-batches-py").is_dir()


def _load_cifar10(root: Path, classes: Sequence[str] | None, download: bool) -> Dataset:
    chosen = _check_classes(classes or BOOK_CLASSES, CIFAR10_CLASSES, "CIFAR-10")
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
