"""The `ptm` CLI through Typer's runner: happy paths, JSON, and errors without tracebacks."""

import json

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_info_prints_the_books_numel_list():
    result = invoke("info", "net")
    assert result.exit_code == 0, result.output
    assert "18,090" in result.output
    assert "[432, 16, 1152, 8, 16384, 32, 64, 2]" in result.output


def test_info_json_parses_and_counts_tied_resdeep_once():
    result = invoke("info", "resdeep", "--tied", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total"] == 75810
    assert summary["tied_keys"] == 99 * 6
    untied = json.loads(invoke("info", "resdeep", "--json").stdout)
    assert untied["total"] == 994530


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (("info", "resnet"), 2, "choose one of: net, width"),
        (("info", "net", "--n-blocks", "3"), 2, "takes no option"),
        (("info", "resdeep", "--n-blocks", "0"), 2, "positive"),
    ],
)
def test_info_errors_are_one_line_without_traceback(args, code, needle):
    result = invoke(*args)
    assert result.exit_code == code
    assert needle in result.output
    assert "Traceback" not in result.output


def test_help_shows_examples():
    assert "Example: ptm info" in invoke("--help").output
    assert "Example: ptm info resdeep" in invoke("info", "--help").output


# --- train / eval / convert ---------------------------------------------------------------


def test_train_then_eval_json(image_folder, tmp_path):
    out = tmp_path / "net.safetensors"
    result = invoke("train", "net", "--data-dir", str(image_folder), "--classes", "airplane,bird",
                    "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["checkpoint"] == str(out) and summary["epochs_done"] == 2
    assert "epoch   2/2" in result.stderr
    evaluated = invoke("eval", str(out), "--data-dir", str(image_folder), "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["val_accuracy"] == summary["val_accuracy"]


def test_convert_round_trip(tmp_path):
    import torch

    from ptm_func import NetBatchNorm

    torch.save(NetBatchNorm().state_dict(), tmp_path / "book.pt")
    result = invoke("convert", str(tmp_path / "book.pt"), str(tmp_path / "ours.safetensors"))
    assert result.exit_code == 0, result.output
    assert "batchnorm" in result.output
    back = invoke("convert", str(tmp_path / "ours.safetensors"), str(tmp_path / "back.pt"))
    assert back.exit_code == 0, back.output


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (("train", "net", "--epochs", "-1"), 2, "epochs must be >= 0"),
        (("train", "net", "--lr", "0"), 2, "lr must be a positive"),
        (("train", "net", "--batch-size", "0"), 2, "batch size must be >= 1"),
        (("train", "vgg"), 2, "choose one of: net, width, l2"),
        (("train", "net", "--data-dir", "/no/such/dir", "--device", "cpu"), 1, "does not exist"),
        (("eval", "/no/such.safetensors"), 1, "no checkpoint at"),
        (("convert", "a.txt", "b.txt"), 2, "convert goes .pt"),
        (("convert", "/no/such.pt", "b.safetensors"), 1, "no file at"),
    ],
)
def test_train_eval_convert_errors(args, code, needle):
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_cuda_without_cuda_is_a_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke("train", "net", "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device" in result.output


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    result = invoke("eval", str(bad))
    assert result.exit_code == 1 and "truncated or corrupt" in result.output
