"""Every size is checked against what the machine has, before any work: one line, exit 2."""

import time

import pytest
from typer.testing import CliRunner

import ptm_func.training.limits as limits
from cli.main import app
from ptm_func.nets.registry import get_model
from ptm_func.training.limits import activation_bytes, cpu_count


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "net", "--nproc", "1000", "--device", "cpu"], "more workers than the"),
        (["sweep", "net", "--lr", "0.1,0.2", "--nproc", "999", "--device", "cpu"], "more workers than the"),
        (["sweep", "net", "--seeds", "1000000000", "--device", "cpu"], "makes 1,000,000,000 members"),
        (["sweep", "net", "--lr", "0.1,0.2,0.3", "--seeds", "40000", "--device", "cpu"], "120,000 members"),
        (["check", "net", "--steps", "100000000", "--device", "cpu"], "of memory, but cpu has"),
        (["check", "net", "--batch-size", "100000000", "--device", "cpu"], "of memory, but cpu has"),
    ],
)
def test_sizes_beyond_the_machine_are_refused_at_once(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("ptm: error:") and needle in lines[-1], result.output
    assert len([line for line in lines if line.startswith("ptm: error:")]) == 1
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "runs").exists()


def test_nproc_up_to_the_cpus_is_allowed_in_principle():
    assert cpu_count() >= 1


def test_a_batch_that_does_not_fit_is_refused_before_training(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "free_memory", lambda device: 50 << 20)  # 50 MiB free
    out = tmp_path / "r.safetensors"
    data = ["--data", image_folder, "--classes", "airplane,bird", "--device", "cpu", "--out", out]
    result = invoke("train", "resdeep", *data, "--batch-size", "64", "--epochs", "1")
    assert result.exit_code == 2 and "a step on batches of 64 needs about" in result.output, result.output
    assert not out.exists()


def test_a_sweep_that_does_not_fit_on_the_disk_is_refused(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr("ptm_func.runs.sweep_run.free_disk", lambda folder: 1 << 20)  # 1 MiB free
    data = ["--data", image_folder, "--classes", "airplane,bird", "--device", "cpu"]
    result = invoke("sweep", "net", *data, "--lr", "0.1,0.2", "--seeds", "20", "--out", tmp_path / "s")
    assert result.exit_code == 2 and "40 members need about" in result.output, result.output
    assert not (tmp_path / "s" / "net-lr0.1-seed123.safetensors").exists()


def test_activation_memory_is_measured_and_grows_with_depth():
    two, twenty, hundred = (activation_bytes(get_model("resdeep", n_blocks=n)) for n in (2, 20, 100))
    assert two > 32 * 32 * 32 * 4  # at least conv1's output
    assert (hundred - twenty) / 80 == pytest.approx((twenty - two) / 18)  # each block keeps the same


def test_images_per_second_count_the_images_not_the_batch_size():
    """A --batch-size beyond the data is one batch of all of it; img/s used to count 10**8."""
    import torch

    from ptm_func.data.dataset import Dataset, Split
    from ptm_func.training.config import book_setup
    from ptm_func.training.loop import fit

    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randn(40, 3, 32, 32, generator=gen), torch.randint(0, 2, (40,), generator=gen))
    model, config = book_setup("net", epochs=1, batch_size=10**8, compile=False)
    stats = fit(model, Dataset(split, split, ("a", "b"), "random"), config).history[0]
    assert stats.samples_per_second * stats.seconds == pytest.approx(40)


def test_a_batch_larger_than_the_data_is_one_batch_of_all_of_it_with_a_note(image_folder, tmp_path):
    """Issue 28 (5): --batch-size 10**12 used to allocate arange(10**12) after writing the record."""
    from safetensors.torch import load_file

    data = ["--data", image_folder, "--classes", "airplane,bird", "--device", "cpu", "--epochs", "2"]
    huge = invoke(
        "train", "net", *data, "--batch-size", "1000000000000", "--out", tmp_path / "huge.safetensors"
    )
    assert huge.exit_code == 0, huge.output
    assert "batch size 1,000,000,000,000 is larger than the 80 training images" in huge.output
    whole = invoke("train", "net", *data, "--batch-size", "80", "--out", tmp_path / "whole.safetensors")
    assert whole.exit_code == 0 and "is larger than" not in whole.output, whole.output
    a, b = load_file(tmp_path / "huge.safetensors"), load_file(tmp_path / "whole.safetensors")
    assert all(a[k].equal(b[k]) for k in b)  # the same steps, bit for bit
    sweep = invoke(
        "sweep", "net", *data, "--lr", "0.1,0.2", "--batch-size", "1000000", "--out", tmp_path / "s"
    )
    assert sweep.exit_code == 0 and "each epoch is one batch of all of them" in sweep.output, sweep.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "net", "--classes", "airplane,airplane"], "classes repeat: ['airplane', 'airplane']"),
        (["train", "net", "--classes", "airplane"], "need at least two classes, got ['airplane']"),
        (["sweep", "net", "--lr", "0.1,0.2", "--classes", "bird,bird"], "classes repeat"),
        (["train", "net", "--augment", "flip,flip"], "augmentation 'flip' given twice"),
        (["sweep", "net", "--lr", "0.1,0.2", "--augment", "none,crop"], "'none' means no augmentation"),
    ],
)
def test_usage_errors_that_need_no_data_come_before_loading_it(args, needle, image_folder, tmp_path):
    """Issue 28 (7): these used to print `loading data ...` first."""
    out = tmp_path / ("o.safetensors" if args[0] == "train" else "o")
    result = invoke(*args, "--data", image_folder, "--device", "cpu", "--out", out)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("ptm: error: ") and needle in line, result.output
    assert list(tmp_path.iterdir()) == []


def test_info_on_a_folder_says_what_to_pass(image_folder, tmp_path):
    sweep = invoke("sweep", "net", "--lr", "0.1,0.2", "--epochs", "1", "--data", image_folder,
                   "--classes", "airplane,bird", "--device", "cpu", "--out", tmp_path / "S")  # fmt: skip
    assert sweep.exit_code == 0, sweep.output
    result = invoke("info", tmp_path / "S")
    assert result.exit_code == 2
    assert f"is a sweep's folder of 2 checkpoints: give one, e.g. ptm info {tmp_path / 'S'}" in result.output
    empty = invoke("info", tmp_path / "S" / "..")
    assert (
        empty.exit_code == 2 and "is a folder: give a model name or a .safetensors checkpoint" in empty.output
    )
