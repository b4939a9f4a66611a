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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
MAX_IMAGE_PIXELS = 40_000_000  # a 40-megapixel photo; larger files are refused before decoding


class DataError(ValueError):
    """The data could not be found, fetched or read; the message says what to do."""


class ClassChoiceError(DataError):
    """The classes asked for do not exist there, repeat, or do not fit the model's outputs."""


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


def fingerprint(dataset: Dataset) -> dict[str, Any]:
    """Images per class in each split and a SHA-256 of labels and pixels (0.1 s for CIFAR-2)."""
    digest = hashlib.sha256()
    for split in (dataset.train, dataset.val):
        for tensor in (split.labels, split.images):
            digest.update(memoryview(tensor.contiguous().cpu().numpy()).cast("B"))
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
        return _load_image_folder(root, pick)
    if _cifar10_present(root):
        return _load_cifar10(root, pick, download=False)
    raise DataError(
        f"{root} is neither an ImageFolder root (train/<class>/*.jpg and test/ or val/) nor a folder "
        "holding cifar-10-batches-py"
    )


@dataclass(frozen=True)
class ClassPick:
    """The classes asked for (None: the source's default) and how many the model can output."""

    wanted: Sequence[str] | None = None
    n_classes: int | None = None

    def choose(
        self, available: Sequence[str], where: str, default: Sequence[str] | None = None
    ) -> tuple[str, ...]:
        """The classes to load, in label order, or ClassChoiceError before anything is read."""
        wanted = tuple(self.wanted or default or available)
        if len(wanted) < 2:
            raise ClassChoiceError(f"need at least two classes, got {list(wanted)} ({where})")
        if len(set(wanted)) != len(wanted):
            raise ClassChoiceError(f"classes repeat: {list(wanted)}")
        missing = [c for c in wanted if c not in available]
        if missing:
            raise ClassChoiceError(f"no class {missing} in {where}; available: {', '.join(available)}")
        if self.n_classes is not None and len(wanted) != self.n_classes:
            raise ClassChoiceError(
                f"the model has {self.n_classes} outputs but {len(wanted)} classes were chosen "
                f"({', '.join(wanted)}; {where}); pick {self.n_classes} with --classes"
            )
        return wanted


def _load_image_folder(root: Path, pick: ClassPick) -> Dataset:
    val_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if val_dir is None:
        raise DataError(f"{root} has train/ but no test/ or val/ folder beside it")
    # hidden folders (.ipynb_checkpoints and the like) are not classes
    train_dir = root / "train"
    available = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    chosen = pick.choose(available, f"{train_dir}")
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
        files = sorted(
            p
            for p in class_dir.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise DataError(f"{class_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files_per_class.append(files)
    return _decode_split(files_per_class)


def _decode_split(sources_per_class: Sequence[Sequence[Path | tuple[str, bytes]]]) -> Split:
    """Decode 32x32 images, class by class (label = position), into one normalised Split."""
    images, labels = [], []
    for label, sources in enumerate(sources_per_class):
        images += [read_image(source, expect_size=(IMAGE_SIZE, IMAGE_SIZE)) for source in sources]
        labels += [label] * len(sources)
    return Split(normalize(torch.stack(images)), torch.tensor(labels, dtype=torch.int64))


def read_image(
    source: Path | tuple[str, bytes],
    *,
    expect_size: tuple[int, int] | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Tensor:
    """Decode an image file, or a (name, bytes) pair, to a (3, H, W) uint8 RGB tensor.

    The size the file declares is checked before decoding: `expect_size` (width, height) must
    match, and no image over `max_pixels` is decoded (a tiny file can declare 30000x30000).
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    name, opened = (source, source) if isinstance(source, Path) else (source[0], io.BytesIO(source[1]))
    try:
        with Image.open(opened) as image:
            width, height = image.size
            if expect_size is not None and (width, height) != expect_size:
                raise DataError(
                    f"{name} is {width}x{height}; training images must be {expect_size[0]}x{expect_size[1]}"
                )
            if width * height > max_pixels:
                raise DataError(
                    f"{name} declares {width}x{height} pixels; ptm decodes images up to "
                    f"{max_pixels / 1e6:.0f} megapixels"
                )
            return pil_to_tensor(image.convert("RGB"))
    except Image.DecompressionBombError as err:
        raise DataError(f"{name} declares a size too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot decode image {name}: {err}") from None


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
                data = archive.extractfile(member).read()
                files.setdefault((parts[1], parts[2]), []).append((f"{BUNDLED_LABEL}/{member.name}", data))
    splits = [_decode_split([sorted(files[split, c]) for c in chosen]) for split in ("train", "test")]
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
