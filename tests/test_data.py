"""Loading ImageFolder trees into device tensors, and the errors users hit."""

import pytest
import torch

from ptm_func.data.dataset import BOOK_MEAN, BOOK_STD
from ptm_func.data.sources import load_dataset
from ptm_func.errors import DataError
from tests.conftest import write_png


def test_image_folder_loads_normalised_nchw(image_folder):
    data = load_dataset(image_folder, classes=["bird", "airplane"])
    assert data.classes == ("bird", "airplane")
    assert data.train.images.shape == (80, 3, 32, 32)
    assert data.val.images.shape == (24, 3, 32, 32)
    assert data.train.labels.tolist() == [0] * 40 + [1] * 40
    # bird (class index 1 in the generator) has a bright green channel: it is label 0 here
    green = data.train.images[:40, 1] * BOOK_STD[1] + BOOK_MEAN[1]
    assert green.mean() > 0.55
    raw_max = (
        data.train.images * torch.tensor(BOOK_STD).view(1, 3, 1, 1) + torch.tensor(BOOK_MEAN).view(1, 3, 1, 1)
    ).max()
    assert raw_max <= 1.0 + 1e-5


def test_default_classes_are_all_folders(image_folder):
    assert load_dataset(image_folder).classes == ("airplane", "bird", "cat")


@pytest.mark.parametrize(
    "classes,needle",
    [(["bird"], "at least two"), (["bird", "dog"], "no class ['dog']"), (["cat", "cat"], "repeat")],
)
def test_bad_class_choices(image_folder, classes, needle):
    with pytest.raises(DataError, match=None) as excinfo:
        load_dataset(image_folder, classes=classes)
    assert needle in str(excinfo.value)


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_folder_without_val_split(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no test/ or val/"):
        load_dataset(tmp_path)


def test_folder_that_is_neither_image_folder_nor_cifar10(tmp_path, offline):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="neither an ImageFolder root"):
        load_dataset(tmp_path)
    assert offline == []  # a folder never triggers a download


def test_wrong_image_size_and_corrupt_image(tmp_path):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            write_png(torch.zeros(3, 32, 32, dtype=torch.uint8), str(tmp_path / split / name / "0.png"))
    write_png(torch.zeros(3, 16, 16, dtype=torch.uint8), str(tmp_path / "train" / "a" / "1.png"))
    with pytest.raises(DataError, match="must be 32x32"):
        load_dataset(tmp_path)
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="cannot decode"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("value,expected", [(0, 0), (32768, 128), (60000, 233), (65535, 255)])
def test_a_16_bit_grey_png_is_scaled_to_8_bits_not_clipped(value, expected, tmp_path):
    """Issue 28 (7): a mid-grey 16-bit PNG used to read as white (PIL's convert clips at 255)."""
    import numpy as np
    from PIL import Image

    from ptm_func.data.folders import read_image

    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((32, 32), value, dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    image = read_image(path)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert image.unique().tolist() == [expected]
