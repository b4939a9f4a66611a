"""--augment flip,crop: each image a flip and/or crop of its reflect-padded self, keyed per sample.

The oracle for one image is the list of every window the augmentation may cut (9 x 9 offsets
of the 4-pixel reflect-padded image, mirrored or not); runs are checked against themselves:
deterministic, resumable bit for bit, the same in every execution path.
"""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cli.main import app
from ptm_func.data.dataset import Dataset, Split
from ptm_func.files.resume import load_run
from ptm_func.nets import rng
from ptm_func.runs.reporter import Silent
from ptm_func.runs.training import run_training
from ptm_func.training.augment import CROP_PADDING, augment, check_augmentations
from ptm_func.training.config import TrainConfig, book_setup
from ptm_func.training.loop import fit

BOTH = ("flip", "crop")


def candidates(image: torch.Tensor, names) -> list[torch.Tensor]:
    """Every image the augmentation may make of `image` (C, H, W)."""
    p = CROP_PADDING if "crop" in names else 0
    padded = F.pad(image[None], (p,) * 4, mode="reflect")[0] if p else image
    h, w = image.shape[1:]
    windows = [padded[:, y : y + h, x : x + w] for y in range(2 * p + 1) for x in range(2 * p + 1)]
    return windows + ([win.flip(-1) for win in windows] if "flip" in names else [])


def per_sample_keys(seed: int, n: int) -> torch.Tensor:
    return rng.fold_in(rng.key(seed), torch.arange(n))


@pytest.mark.parametrize("names", [("flip",), ("crop",), BOTH])
def test_each_image_is_one_of_the_windows_the_augmentation_may_cut(names):
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = augment(images, per_sample_keys(1, 16), names)
    assert out.shape == images.shape and out.dtype == images.dtype
    for image, made in zip(images, out, strict=True):
        assert sum(torch.equal(made, c) for c in candidates(image, names)) >= 1


def test_flips_and_offsets_are_uniform():
    n = 18_000
    keys = per_sample_keys(3, n)
    columns = torch.arange(32.0).expand(n, 1, 32, 32).contiguous()  # pixel value = its column
    flipped = augment(columns, keys, ("flip",))[:, 0, 0, 0] == 31
    assert abs(flipped.float().mean().item() - 0.5) < 0.015
    rows = columns.transpose(2, 3).contiguous()  # pixel value = its row
    cropped = augment(columns, keys, ("crop",))[:, 0, 0, 0]  # |x offset - 4|: 0 once, 1..4 twice
    counts = torch.bincount(cropped.long(), minlength=5).float() / n
    expected = torch.tensor([1, 2, 2, 2, 2]) / 9
    assert (counts - expected).abs().max() < 0.015
    row_counts = torch.bincount(augment(rows, keys, ("crop",))[:, 0, 0, 0].long(), minlength=5).float() / n
    assert (row_counts - expected).abs().max() < 0.015


def test_an_images_draw_depends_on_its_key_only_not_on_its_batch():
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    keys = per_sample_keys(5, 8)
    whole = augment(images, keys, BOTH)
    for i in range(8):  # alone, as a rank holding a slice of the global batch would see it
        assert torch.equal(augment(images[i : i + 1], keys[i : i + 1], BOTH)[0], whole[i])
    assert not torch.equal(augment(images, per_sample_keys(6, 8), BOTH), whole)


def test_vmapped_and_compiled_augmentation_equal_eager():
    images = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    keys = torch.stack([per_sample_keys(1, 8), per_sample_keys(2, 8)])
    eager = torch.stack([augment(images[r], keys[r], BOTH) for r in range(2)])
    assert torch.equal(torch.func.vmap(lambda x, k: augment(x, k, BOTH))(images, keys), eager)
    compiled = torch.compile(lambda x, k: augment(x, k, BOTH))
    assert torch.equal(compiled(images[0], keys[0]), eager[0])


def test_unknown_names_are_refused_and_the_order_is_canonical():
    assert check_augmentations(["crop", "flip"]) == BOTH
    with pytest.raises(ValueError, match="augmentation 'crop' given twice"):  # as classes: refused
        check_augmentations(["crop", "flip", "crop"])
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'; choose from: flip, crop"):
        TrainConfig(augment=("rotate",))
    assert TrainConfig(augment=["crop", "flip"]).augment == BOTH  # as read back from JSON
    assert augment(torch.ones(2, 3, 32, 32), per_sample_keys(0, 2), ()).equal(torch.ones(2, 3, 32, 32))


def random_data(n=64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    split = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 3, (n,), generator=gen))
    return Dataset(split, Split(split.images[:32], split.labels[:32]), ("a", "b", "c"), "random")


def params_equal(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["net", "dropout", "batchnorm"])
def test_augmented_runs_are_deterministic_and_differ_from_unaugmented_ones(name):
    model, config = book_setup(name, epochs=2, batch_size=16, compile=False, augment=BOTH, n_classes=3)
    data = random_data()
    first, second = fit(model, data, config), fit(model, data, config)
    assert params_equal(first.params, second.params)
    plain = fit(model, data, replace(config, augment=()))
    assert not params_equal(first.params, plain.params)


def test_augmented_members_match_their_separate_runs_looped_bitwise_and_vmapped_closely():
    model, base = book_setup("net", epochs=1, batch_size=16, compile=False, augment=BOTH, n_classes=3)
    data = random_data()
    configs = [replace(base, seed=1, lr=0.01), replace(base, seed=2, lr=0.02)]
    looped = fit(model, data, [replace(c, members_vmap=False) for c in configs])
    vmapped = fit(model, data, [replace(c, members_vmap=True) for c in configs])
    for r, config in enumerate(configs):
        alone = fit(model, data, config)
        assert params_equal(looped.member(r).params, alone.params)
        for key, value in alone.params.items():
            torch.testing.assert_close(vmapped.member(r).params[key], value, rtol=1e-4, atol=1e-6)


def test_compiled_augmented_step_agrees_with_eager():
    model, config = book_setup("net", epochs=1, batch_size=16, compile=False, augment=BOTH, n_classes=3)
    data = random_data()
    eager, compiled = fit(model, data, config), fit(model, data, replace(config, compile=True))
    for key, value in eager.params.items():
        torch.testing.assert_close(compiled.params[key], value, rtol=1e-4, atol=1e-5)


def test_an_augmented_run_resumes_bit_for_bit_and_records_its_augmentation(image_folder, tmp_path):
    common = dict(data=image_folder, batch_size=16, device="cpu", reporter=Silent(), compile=False)
    whole = run_training("dropout", epochs=3, augment=BOTH, out=tmp_path / "whole.safetensors", **common)
    run_training("dropout", epochs=1, augment=BOTH, out=tmp_path / "part.safetensors", **common)
    resumed = run_training("dropout", epochs=3, resume=tmp_path / "part.safetensors", **common)
    assert params_equal(resumed.result.train_state.params, whole.result.train_state.params)
    _, _, config = load_run(tmp_path / "part.safetensors", "cpu")
    assert config.augment == BOTH


def test_cli_augment_option(image_folder, tmp_path):
    def train(augment, out, *more):
        args = ["train", "net", "--data", image_folder, "--augment", augment, "--device", "cpu", "--out", out]
        return CliRunner().invoke(app, [str(a) for a in [*args, *more]])

    bad = train("flip,rotate", tmp_path / "x.safetensors")
    assert bad.exit_code == 2 and "unknown augmentation 'rotate'" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "x.safetensors").exists()
    good = train("crop,flip", tmp_path / "y.safetensors", "--epochs", "1")
    assert good.exit_code == 0, good.output
    info = CliRunner().invoke(app, ["info", str(tmp_path / "y.safetensors")])
    assert "augmented: flip, crop" in info.output
