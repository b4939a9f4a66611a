"""Where data comes from: --data-dir, cached CIFAR-10, its download, then the bundled CIFAR-2."""

import hashlib
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ptm_func.data import sources as data_module
from ptm_func.data.sources import BUNDLED_LABEL, BUNDLED_SHA256, load_bundled, load_dataset
from ptm_func.errors import DataError


@pytest.fixture(scope="module")
def bundled():
    return load_bundled()


def fake_cifar10(monkeypatch, calls):
    """Serve a 20-image stand-in for torchvision's CIFAR10 (the real one checks md5s)."""

    def split(root, train):
        calls.append(("read", train))
        gen = np.random.default_rng(int(train))
        return SimpleNamespace(
            data=gen.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), targets=[i % 10 for i in range(20)]
        )

    monkeypatch.setattr(data_module, "_cifar10_split", split)


def test_bundled_cifar2_is_the_books_split(bundled):
    assert bundled.source == BUNDLED_LABEL and bundled.classes == ("airplane", "bird")
    assert bundled.train.images.shape == (10000, 3, 32, 32) and bundled.val.images.shape == (2000, 3, 32, 32)
    assert bundled.train.labels.bincount().tolist() == [5000, 5000]
    assert bundled.val.labels.bincount().tolist() == [1000, 1000]
    assert bundled.train.images.dtype == torch.float32
    assert abs(bundled.train.images.mean().item()) < 0.2  # normalised with the book's statistics
    assert hashlib.sha256(data_module.BUNDLED_ARCHIVE.read_bytes()).hexdigest() == BUNDLED_SHA256
    assert data_module.BUNDLED_ARCHIVE.stat().st_size < 5 * 2**20


def test_auto_offline_falls_back_to_bundled_and_says_so(offline, bundled, tmp_path, monkeypatch):
    """No CIFAR-10 in the cache, the download fails (no network): the bundled CIFAR-2, one note."""
    monkeypatch.setenv("PTM_DATA_DIR", str(tmp_path))
    notes = []
    data = load_dataset(notify=notes.append)
    assert data.source == BUNDLED_LABEL
    assert torch.equal(data.train.images, bundled.train.images)
    assert offline and "cifar-10-python.tar.gz" in offline[0]  # the download was tried first
    assert len(notes) == 1 and "bundled CIFAR-2" in notes[0] and "cifar-10-python.tar.gz" in notes[0]
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()  # no partial download left behind


def test_auto_uses_cached_cifar10_without_downloading(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("PTM_DATA_DIR", str(tmp_path))
    (tmp_path / "cifar-10-batches-py").mkdir()
    calls = []
    fake_cifar10(monkeypatch, calls)
    data = load_dataset(notify=pytest.fail)
    assert data.source == f"cifar10:{tmp_path.resolve()}" and offline == []
    assert calls == [("read", True), ("read", False)]
    # airplane (0) and bird (2) of the 20 fake images: labels 0 and 1
    assert data.train.labels.tolist() == [0, 1, 0, 1]


def test_auto_downloads_when_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PTM_DATA_DIR", str(tmp_path))
    calls = []
    fake_cifar10(monkeypatch, calls)
    monkeypatch.setattr(data_module, "_download_cifar10", lambda root: calls.append(("download", root)))
    data = load_dataset(classes=["cat", "dog"], notify=pytest.fail)
    assert calls[0] == ("download", tmp_path.resolve()) and data.classes == ("cat", "dog")


def test_other_classes_offline_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PTM_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="holds only airplane and bird: for cat, dog put https://"):
        load_dataset(classes=["cat", "dog"])
    with pytest.raises(DataError, match="no class \\['frog'\\] in the bundled CIFAR-2"):
        load_dataset("bundled", classes=["airplane", "frog"])


def test_explicit_sources_never_fall_back(offline, image_folder):
    with pytest.raises(DataError, match="could not be downloaded"):
        load_dataset("cifar10")  # asked for the original pixels: no silent substitute
    offline.clear()
    assert load_dataset("bundled", classes=["bird", "airplane"]).classes == ("bird", "airplane")
    folder = load_dataset(image_folder, classes=["airplane", "bird"])
    assert offline == []
    assert folder.source == f"imagefolder:{image_folder.resolve()}"


def test_recorded_source_loads_the_same_data_again(image_folder, tmp_path, monkeypatch):
    """A checkpoint stores Dataset.source; a resumed run in another directory finds the data."""
    first = load_dataset(image_folder, classes=["airplane", "bird"])
    monkeypatch.chdir(tmp_path)
    again = load_dataset(first.source, classes=["airplane", "bird"])
    assert again.source == first.source and torch.equal(again.train.images, first.train.images)
    assert load_dataset(BUNDLED_LABEL).source == BUNDLED_LABEL


def test_damaged_bundle_is_refused(tmp_path, monkeypatch):
    damaged = tmp_path / "cifar2.tar.gz"
    shutil.copy(data_module.BUNDLED_ARCHIVE, damaged)
    with open(damaged, "r+b") as f:
        f.seek(1000)
        f.write(b"\0")
    monkeypatch.setattr(data_module, "BUNDLED_ARCHIVE", damaged)
    with pytest.raises(DataError, match="damaged"):
        load_bundled()
    monkeypatch.setattr(data_module, "BUNDLED_ARCHIVE", tmp_path / "gone.tar.gz")
    with pytest.raises(DataError, match="missing"):
        load_bundled()
