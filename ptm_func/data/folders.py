"""ImageFolder trees and image files: choosing classes, size-checked decoding, one Split per folder."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ptm_func.data.dataset import IMAGE_SIZE, Dataset, Split, normalize
from ptm_func.errors import ClassChoiceError, DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
ALL = "all"  # --classes all: every class of the source, in its order
MAX_IMAGE_PIXELS = 40_000_000  # a 40-megapixel photo; larger files are refused before decoding


@dataclass(frozen=True)
class ClassPick:
    """The classes asked for (None: the source's default; "all": every class there, in its order)
    and how many the model can output (None: any count, the model is built to fit)."""

    wanted: Sequence[str] | None = None
    n_classes: int | None = None

    def choose(
        self, available: Sequence[str], where: str, default: Sequence[str] | None = None
    ) -> tuple[str, ...]:
        """The classes to load, in label order, or ClassChoiceError before anything is read."""
        asked = self.wanted.split(",") if isinstance(self.wanted, str) else self.wanted  # "cat,dog"
        if asked is not None and [c.strip() for c in asked] == [ALL]:
            asked = available
        wanted = tuple(c.strip() for c in asked or default or available)
        check_class_names(wanted, f" ({where})")
        missing = [c for c in wanted if c not in available]
        if missing:
            raise ClassChoiceError(f"no class {missing} in {where}; available: {', '.join(available)}")
        if self.n_classes is not None and len(wanted) != self.n_classes:
            raise ClassChoiceError(
                f"the model has {self.n_classes} outputs but {len(wanted)} classes were chosen "
                f"({', '.join(wanted)}; {where}); pick {self.n_classes} with --classes"
            )
        return wanted


def check_class_names(names: Sequence[str], where: str = "") -> None:
    """Two or more, none repeated: what can be said of asked classes before any data is read."""
    if list(names) == [ALL]:
        return
    if len(names) < 2:
        raise ClassChoiceError(f"need at least two classes, got {list(names)}{where}")
    if len(set(names)) != len(names):
        raise ClassChoiceError(f"classes repeat: {list(names)}")


def load_image_folder(root: Path, pick: ClassPick) -> Dataset:
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
    return decode_split(files_per_class)


def decode_split(sources_per_class: Sequence[Sequence[Path | tuple[str, bytes]]]) -> Split:
    """Decode 32x32 images, class by class (label = position), into one normalised Split."""
    images, labels = [], []
    for label, sources in enumerate(sources_per_class):
        images += [read_image(source, expect_size=(IMAGE_SIZE, IMAGE_SIZE)) for source in sources]
        labels += [label] * len(sources)
    return Split(normalize(torch.stack(images)), torch.tensor(labels, dtype=torch.int64))


def _sixteen_bit_grey(grey: Tensor) -> Tensor:
    """(1, H, W) values 0..65535 -> (3, H, W) uint8, 65535 -> 255 (PIL's convert would clip)."""
    eight = torch.round(grey.to(torch.float64).clamp(0, 65535) / 257).to(torch.uint8)
    return eight.expand(3, -1, -1).contiguous()


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
            if image.mode.startswith("I"):  # 16-bit grey (PNG): scaled to 8 bits, not clipped at 255
                return _sixteen_bit_grey(pil_to_tensor(image))
            return pil_to_tensor(image.convert("RGB"))
    except Image.DecompressionBombError as err:
        raise DataError(f"{name} declares a size too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot decode image {name}: {err}") from None
