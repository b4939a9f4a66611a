"""Regression tests for the adversarial review (issue 10): no lost work, no hang, no traceback.

Each section is one class of defect, exercised through the command the user meets it in.
"""

import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import ptm_func.files.resume as resume_module
import ptm_func.runs.signals
import ptm_func.runs.training
from cli.main import app
from ptm_func import NetBatchNorm, get_model
from ptm_func.errors import CheckpointError
from ptm_func.files.checkpoint import load_checkpoint, save_checkpoint
from ptm_func.files.records import read_metrics
from ptm_func.files.resume import load_run, save_run, training_state_path
from ptm_func.training.config import book_setup
from ptm_func.training.state import init_train_state
from tests.conftest import write_image_folder, write_png

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def fails_cleanly(result, code, needle):
    assert result.exit_code == code, result.output
    assert needle in result.output, result.output
    assert "Traceback" not in result.output


def strict_json(text):
    """json.loads that refuses NaN and Infinity, as strict readers do."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON output"))


@pytest.fixture
def two_classes(image_folder):
    return ["--data", image_folder, "--classes", "airplane,bird", "--device", "cpu"]


@pytest.fixture
def trained(two_classes, tmp_path):
    out = tmp_path / "run" / "net.safetensors"
    result = invoke("train", "net", *two_classes, "--epochs", "2", "--batch-size", "16", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def ptm_process(*args, limit_file_bytes=None):
    """Run ptm in a child process (optionally with a file-size limit: a disk that fills up)."""

    def limit():
        if limit_file_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes then fail with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    code = "from cli.main import app; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )


# --- 1. no work thrown away: outputs checked before training; failed saves rescued ----------


@pytest.mark.parametrize(
    "option,value,code,needle",
    [
        ("--json-out", "DIR", 1, "is a folder"),
        ("--chart", "DIR/c.png", 1, "is a folder"),
        ("--chart", "noext", 2, "--chart must name a .png file"),
        ("--json-out", "/proc/c.json", 1, "cannot write /proc/c.json"),
        ("--resdeep-blocks", "0", 2, "resdeep: n_blocks must be an integer in 1..10,000"),
    ],
)
def test_compare_checks_every_output_before_training(option, value, code, needle, two_classes, tmp_path):
    (tmp_path / "DIR" / "c.png").mkdir(parents=True)
    value = value.replace("DIR", str(tmp_path / "DIR"))
    args = ["compare", "net", "resdeep", *two_classes, "--epochs", "1", option, value]
    if option != "--json-out":
        args += ["--json-out", tmp_path / "c.json"]
    result = invoke(*args)
    fails_cleanly(result, code, needle)
    assert "net ..." not in result.output  # nothing trained


def test_compare_keeps_the_table_when_the_json_cannot_be_written(two_classes, tmp_path, monkeypatch):
    """The disk went away between the check and the end: the table is printed, the JSON rescued."""
    import ptm_func.files.atomic

    monkeypatch.setattr(ptm_func.files.atomic, "check_writable", lambda path, size: None)
    (tmp_path / "taken.json").mkdir()
    result = invoke(
        "compare",
        "net",
        *two_classes,
        "--epochs",
        "1",
        "--json-out",
        tmp_path / "taken.json",
        "--chart",
        tmp_path / "c.png",
    )
    assert result.exit_code == 1 and "18,090" in result.stdout
    rescued = result.stderr.split("the JSON is in ")[1].split()[0]
    assert json.loads(Path(rescued).read_text())["rows"][0]["variant"] == "net"
    Path(rescued).unlink()


def test_a_full_disk_is_found_before_training(two_classes, tmp_path):
    """The writability probe writes as many bytes as a save needs (a 0-byte probe passes on a full disk)."""
    result = ptm_process(
        "train",
        "net",
        *two_classes,
        "--epochs",
        "1",
        "--out",
        tmp_path / "net.safetensors",
        limit_file_bytes=100_000,
    )
    assert result.returncode == 1, result.stderr
    assert "cannot write" in result.stderr and "File too large" in result.stderr
    assert "loading data" not in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_failed_final_save_goes_to_a_rescue_file(two_classes, tmp_path, monkeypatch):
    out = tmp_path / "net.safetensors"
    save_run_for_real = ptm_func.runs.training.save_run

    def disk_full_at_out(path, *args):
        if Path(path) == out:
            raise CheckpointError(f"cannot write checkpoint {out}: No space left on device")
        return save_run_for_real(path, *args)

    monkeypatch.setattr(ptm_func.runs.training, "save_run", disk_full_at_out)
    result = invoke("train", "net", *two_classes, "--epochs", "1", "--out", out, "--json")
    assert result.exit_code == 1, result.output
    summary = strict_json(result.stdout)
    rescued = Path(summary["checkpoint"])
    assert rescued != out and "No space left" in summary["save_failed"]
    assert f"saved to {rescued} instead" in result.stderr
    assert load_run(rescued)[1].epoch == 1  # complete and resumable
    assert not out.exists() and not training_state_path(out).exists()
    for path in (rescued, training_state_path(rescued)):
        path.unlink()


def test_a_failed_save_leaves_neither_half_nor_temp_files(tmp_path, monkeypatch):
    model, config = book_setup("net", epochs=1)
    ts = init_train_state(model, config, "cpu")
    out = tmp_path / "net.safetensors"
    write_temp = resume_module.write_temp_checkpoint
    calls = []

    def second_write_fails(tensors, metadata, path):
        calls.append(path)
        if len(calls) == 2:
            raise CheckpointError("cannot write checkpoint: No space left on device")
        return write_temp(tensors, metadata, path)

    monkeypatch.setattr(resume_module, "write_temp_checkpoint", second_write_fails)
    with pytest.raises(CheckpointError):
        save_run(out, model, ts, config, {})
    assert list(tmp_path.iterdir()) == []  # no orphan .train.safetensors, no temp


# --- 2. resume means the same run: same data, one commit per save, no silent rewrite --------


def test_resume_from_another_folder_finds_its_data(image_folder, tmp_path, monkeypatch):
    shutil.copytree(image_folder, tmp_path / "a" / "data")
    monkeypatch.chdir(tmp_path / "a")
    args = ["--classes", "airplane,bird", "--device", "cpu", "--batch-size", "16"]
    first = invoke(
        "train", "net", "--data", "data", *args, "--epochs", "1", "--out", tmp_path / "n.safetensors"
    )
    assert first.exit_code == 0, first.output
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "train" / "airplane").mkdir(parents=True)  # a different data/ here
    resumed = invoke("train", "net", "--resume", tmp_path / "n.safetensors", "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert f"imagefolder:{tmp_path / 'a' / 'data'}" in resumed.output


def test_resume_refuses_data_that_changed(image_folder, tmp_path):
    data = shutil.copytree(image_folder, tmp_path / "data")
    out = tmp_path / "n.safetensors"
    args = ["--data", data, "--classes", "airplane,bird", "--device", "cpu", "--batch-size", "16"]
    assert invoke("train", "net", *args, "--epochs", "1", "--out", out).exit_code == 0
    shutil.copy(data / "train" / "bird" / "0000.png", data / "train" / "bird" / "extra.png")
    before = out.read_bytes()
    result = invoke("train", "net", "--resume", out, "--epochs", "2")
    fails_cleanly(result, 1, "is not the data this run was trained on (train [40, 40] now [40, 41]")
    assert out.read_bytes() == before


def test_resume_with_no_more_epochs_changes_nothing(trained):
    before = {p: p.read_bytes() for p in trained.parent.iterdir()}
    result = invoke("train", "net", "--resume", trained, "--epochs", "1")
    fails_cleanly(result, 2, "has trained 2 of 1 epochs already; give --epochs above 2")
    assert {p: p.read_bytes() for p in trained.parent.iterdir()} == before


class Killed(BaseException):
    """kill -9 in-process: nothing after it runs."""


def test_kill_between_the_two_renames_of_a_save_is_recovered(trained, monkeypatch):
    """The newer training state landed, the newer weights are whole in their temp file."""
    ckpt, ts, config = load_run(trained)
    ts.epoch = 5
    renames = []
    replace = os.replace

    def killed_at_second_rename(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise Killed
        replace(src, dst)

    monkeypatch.setattr(resume_module.os, "replace", killed_at_second_rename)
    with pytest.raises(Killed):
        save_run(trained, ckpt.model, ts, config, ckpt.training)
    monkeypatch.setattr(resume_module.os, "replace", replace)
    temps = list(trained.parent.glob(".net.safetensors.tmp*"))
    assert len(temps) == 1 and load_checkpoint(trained).training["progress"]["epoch"] == 2

    _, resumed, _ = load_run(trained)  # finishes the commit
    assert resumed.epoch == 5 and load_checkpoint(trained).training["progress"]["epoch"] == 5
    assert not list(trained.parent.glob(".*tmp*"))


def test_temp_files_of_killed_processes_are_cleaned(trained):
    stale = trained.parent / ".net.safetensors.tmp999999999"  # no such process
    stale.write_bytes(b"half a save")
    assert invoke("train", "net", "--resume", trained, "--epochs", "3").exit_code == 0
    assert not stale.exists()


# --- 3. no hang, no memory blow-up from small files ------------------------------------------


def rewrite_metadata(path, **changes):
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = {**f.metadata(), **changes}
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("n_blocks", ["1000000000", "1e9", '"many"'])
def test_a_checkpoint_claiming_a_billion_blocks_is_refused_at_once(tmp_path, n_blocks):
    model = get_model("resdeep", n_blocks=2)
    path = save_checkpoint(tmp_path / "deep.safetensors", model, *model.init(0))
    rewrite_metadata(path, config=f'{{"n_chans1": 32, "n_blocks": {n_blocks}, "tied": false}}')
    for command in (["info", path], ["eval", path], ["predict", path, path.with_suffix(".png")]):
        started = time.perf_counter()
        fails_cleanly(invoke(*command), 1, "but it holds 2 blocks")
        assert time.perf_counter() - started < 10


@pytest.mark.parametrize(
    "tensors,needle",
    [
        ({"resblocks.99999999.conv.weight": torch.zeros(32, 32, 3, 3)}, "has no conv1.weight"),
        (
            {"conv1.weight": torch.zeros(32, 3, 3, 3), "resblocks.99999999.conv.weight": torch.zeros(1)},
            "resblocks are numbered 99999999, not 0..n-1",
        ),
        ({"conv1.weight": torch.zeros(()), "conv2.weight": torch.zeros(1)}, "conv1.weight of shape ()"),
        ({"fc1.weight": torch.zeros(2, 2)}, "fit no chapter-8 model"),
    ],
)
def test_convert_of_odd_state_dicts_is_quick_and_clear(tensors, needle, tmp_path):
    torch.save(tensors, tmp_path / "odd.pt")
    started = time.perf_counter()
    fails_cleanly(invoke("convert", tmp_path / "odd.pt", tmp_path / "out.safetensors"), 1, needle)
    assert time.perf_counter() - started < 10


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (grey, 1 bit): nothing to decode behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_images_that_declare_huge_sizes_are_refused_before_decoding(trained, image_folder, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(30000, 30000))
    assert bomb.stat().st_size < 1000
    fails_cleanly(invoke("predict", trained, bomb), 1, "bomb.png declares a size too large to decode")
    fails_cleanly(invoke("show", "conv", bomb, "--out", tmp_path / "c.png"), 1, "bomb.png declares a size")
    big = tmp_path / "big.png"
    big.write_bytes(png_declaring(10000, 5000))  # under PIL's own bomb limit, over ptm's
    fails_cleanly(invoke("predict", trained, big), 1, "big.png declares 10000x5000 pixels")
    data = shutil.copytree(image_folder, tmp_path / "data")
    shutil.copy(big, data / "train" / "bird" / "0001.png")
    result = invoke("train", "net", "--data", data, "--classes", "airplane,bird", "--epochs", "1")
    fails_cleanly(result, 1, "0001.png is 10000x5000; training images must be 32x32")


def test_a_long_thin_image_is_predicted_in_little_memory(trained, tmp_path):
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (200_000, 1), (200, 30, 30)).save(strip)
    # VmHWM, the peak of this process's own memory: ru_maxrss survives exec, so it reports the
    # forking parent's (pytest's, GBs late in a run) size when that is larger
    code = (
        "import re, sys\nfrom cli.main import app\ntry:\n    app()\nfinally:\n"
        "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "    print('maxrss', hwm, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "predict", str(trained), str(strip)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "resized from 200000x1 (centre 1x1 square scaled to 32x32)" in result.stdout
    peak_mib = int(result.stderr.split("maxrss")[1]) / 1024
    assert peak_mib < 1500  # it took 6 GB when the shorter side was scaled to 32 first


# --- 4. no wrong answer with exit 0 -----------------------------------------------------------


@pytest.mark.parametrize(
    "args,needle",
    [
        (["eval", "CKPT", "--classes", "airplane,cat"], "was trained on airplane, bird, not airplane, cat"),
        (["eval", "CKPT", "--classes", "airplane,bird,cat"], "the model has 2 outputs but 3 classes"),
        (["train", "net", "--data", "FOLDER", "--classes", "airplane,dog"], "no class ['dog']"),
        (["train", "net", "--data", "FOLDER", "--classes", "bird"], "need at least two classes"),
    ],
)
def test_class_choices_that_do_not_fit_are_usage_errors(args, needle, image_folder, trained):
    args = [{"FOLDER": image_folder, "CKPT": trained}.get(a, a) for a in args]
    fails_cleanly(invoke(*args, "--device", "cpu"), 2, needle)


@pytest.mark.parametrize(
    "option,value",
    [
        ("--momentum", "nan"),
        ("--l2", "nan"),
        ("--l2", "inf"),
        ("--l1", "-inf"),
        ("--weight-decay", "inf"),
        ("--lr", "nan"),
    ],
)
def test_non_finite_hyperparameters_are_refused(option, value, two_classes):
    result = invoke("train", "net", *two_classes, f"{option}={value}")
    fails_cleanly(result, 2, "must be a finite number")
    assert "loading data" not in result.output


def test_a_diverging_run_stops_keeps_finite_weights_and_prints_valid_json(two_classes, tmp_path):
    out = tmp_path / "res.safetensors"
    result = invoke(
        "train",
        "res",
        *two_classes,
        "--lr",
        "10",
        "--momentum",
        "0.9",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 1, result.output
    assert "the loss became NaN or infinite in epoch 1" in result.stderr
    summary = strict_json(result.stdout)
    assert summary["diverged_in_epoch"] == 1 and summary["final_loss"] is None
    ckpt = load_checkpoint(out)
    assert all(torch.isfinite(v).all() for v in ckpt.params.values())
    info = json.loads(out.with_name("res.run.json").read_text())
    assert info["result"]["diverged_in_epoch"] == 1


def test_a_diverging_ensemble_stops_and_saves_every_replica(two_classes, tmp_path):
    out = tmp_path / "res-x2"
    result = invoke(
        "train",
        "res",
        *two_classes,
        "--replicas",
        "2",
        "--lr",
        "10",
        "--momentum",
        "0.9",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 1, result.output
    summary = strict_json(result.stdout)
    assert summary["diverged_in_epoch"] == 1 and summary["diverged_members"] == [0, 1]
    for path in summary["checkpoints"]:
        assert all(torch.isfinite(v).all() for v in load_checkpoint(path).params.values())


def test_a_diverged_sweep_member_records_what_its_own_run_records(two_classes, tmp_path):
    """Issue 21: the member used to get lines for epochs 1-3 (loss null, accuracy 0.5)."""
    common = ["res", *two_classes, "--momentum", "0.9", "--epochs", "3", "--batch-size", "16", "--no-compile"]
    swept = invoke("sweep", *common, "--lr", "10,0.01", "--out", tmp_path / "sweep")
    assert swept.exit_code == 0, swept.output
    alone = invoke("train", *common, "--lr", "10", "--out", tmp_path / "alone.safetensors")
    assert alone.exit_code == 1 and "became NaN or infinite in epoch 1" in alone.output
    member = read_metrics(tmp_path / "sweep" / "res-lr10-seed123.metrics.jsonl")
    assert member == read_metrics(tmp_path / "alone.metrics.jsonl") == []
    assert [
        line["epoch"] for line in read_metrics(tmp_path / "sweep" / "res-lr0.01-seed123.metrics.jsonl")
    ] == [1, 2, 3]


def test_resuming_a_run_killed_before_its_first_save_says_there_is_nothing_to_resume(tmp_path):
    """Issue 21: it used to say the missing checkpoint "can be evaluated"."""
    (tmp_path / "net.run.json").write_text('{"variant": "net"}')
    (tmp_path / "net.metrics.jsonl").write_text("")
    result = invoke("train", "net", "--resume", tmp_path / "net.safetensors")
    fails_cleanly(result, 1, "stopped before its first save, so there is nothing to resume")
    assert "evaluated" not in result.output


# --- 5. one line, not a traceback ------------------------------------------------------------


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"config": "[1, 2]"}, "its metadata 'config' is not a JSON object"),
        ({"config": "{not json"}, "its metadata 'config' is not valid JSON"),
        ({"training": "[]"}, "its metadata 'training' is not a JSON object"),
        ({"training": "null"}, "its metadata 'training' is not a JSON object"),
        ({"training": '{"classes": "airplane"}'}, "class names are not a list of strings"),
        ({"config": '{"n_chans1": 16}'}, "net takes no option ['n_chans1']"),
    ],
)
def test_crafted_checkpoint_metadata_is_one_line(changes, needle, trained):
    rewrite_metadata(trained, **changes)
    for command in ("info", "eval"):
        fails_cleanly(invoke(command, trained), 1, needle)


def test_debug_keeps_the_exit_codes_and_shows_the_traceback():
    result = invoke("--debug", "train", "foo")
    assert result.exit_code == 2 and "Traceback" in result.output and "unknown model 'foo'" in result.output


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_seeds_out_of_range_are_usage_errors_before_loading(seed, two_classes):
    result = invoke("train", "net", *two_classes, f"--seed={seed}")
    fails_cleanly(result, 2, "seed must be in 0..2**63-1")
    assert "loading data" not in result.output


def test_a_bug_is_still_one_line(monkeypatch):
    import ptm_func.reports.summary

    monkeypatch.setattr(ptm_func.reports.summary, "parameter_summary", lambda model: {}["no such key"])
    result = invoke("info", "net")
    fails_cleanly(result, 1, "internal error (KeyError), please report")


# --- 6. output that neither lies nor injects --------------------------------------------------


def test_class_names_from_files_cannot_drive_the_terminal(trained, image_folder):
    ckpt = load_checkpoint(trained)
    forged = ["air\x1b[2Jplane", "bird\nnet: train accuracy 1.0000"]
    save_checkpoint(trained, ckpt.model, ckpt.params, ckpt.state, {**ckpt.training, "classes": forged})
    image = image_folder / "test" / "bird" / "0000.png"
    for command in (["predict", trained, image], ["info", trained]):
        result = invoke(*command)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output
        assert not any(line.startswith("net: train accuracy 1.0000") for line in result.output.splitlines())
    assert "\\x1b[2J" in invoke("info", trained).output


def test_convert_errors_name_the_output_not_a_temp_file(trained, tmp_path, monkeypatch):
    import ptm_func.files.convert

    def read_only(obj, path):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(ptm_func.files.convert.torch, "save", read_only)
    result = invoke("convert", trained, tmp_path / "book.pt")
    fails_cleanly(result, 1, f"cannot write {tmp_path / 'book.pt'}: Read-only file system")
    assert ".tmp" not in result.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["show", "conv", "--index", "0", "--out", "OUT/noext"], "--out must name a .png file"),
        (["train", "net", "--out", "OUT/net.pt"], "--out must name a .safetensors file"),
        (["plot", "OUT/x.metrics.jsonl", "--out", "OUT/x.jpg"], "--out must name a .png file"),
    ],
)
def test_outputs_are_what_they_say(args, needle, tmp_path):
    fails_cleanly(invoke(*[a.replace("OUT", str(tmp_path)) for a in args]), 2, needle)
    assert not list(tmp_path.iterdir())


def test_the_no_metadata_hint_works(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in NetBatchNorm().state_dict().items()}, str(plain))
    fails_cleanly(invoke("eval", plain), 1, "ptm convert IN OUT --model NAME")
    result = invoke("convert", plain, tmp_path / "ours.safetensors", "--model", "batchnorm")
    assert result.exit_code == 0, result.output
    NetBatchNorm().load_state_dict(load_file(tmp_path / "ours.safetensors"), strict=True)
    fails_cleanly(
        invoke("convert", tmp_path / "ours.safetensors", tmp_path / "again.safetensors"), 1, "already"
    )


def test_checkpoints_follow_the_umask(trained):
    mask = os.umask(0o022)
    os.umask(mask)
    for path in (trained, training_state_path(trained), trained.with_name("net.metrics.jsonl")):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


# --- 7. smaller things a user trips over ------------------------------------------------------


def test_hidden_folders_are_not_classes(tmp_path):
    root = write_image_folder(tmp_path / "d", {"train": 4, "test": 2})
    shutil.rmtree(root / "train" / "cat")
    shutil.rmtree(root / "test" / "cat")
    for split in ("train", "test"):
        (root / split / ".ipynb_checkpoints").mkdir()
        write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(root / split / "bird" / ".hidden.png"))
    result = invoke(
        "train",
        "net",
        "--data",
        root,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path / "n.safetensors",
    )
    assert result.exit_code == 0, result.output
    assert "classes airplane, bird" in result.output


def test_a_folder_without_train_says_what_layout_it_wants(tmp_path, offline):
    (tmp_path / "images").mkdir()
    result = invoke("train", "net", "--data", tmp_path / "images", "--device", "cpu")
    fails_cleanly(result, 1, "is neither an ImageFolder root (train/<class>/*.jpg and test/ or val/)")
    assert offline == [] and not (tmp_path / "images" / "cifar-10-python.tar.gz").exists()


def test_predict_reports_the_bad_image_and_predicts_the_rest(trained, image_folder, tmp_path):
    good = image_folder / "test" / "bird" / "0000.png"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = invoke("predict", trained, good, broken, tmp_path / "missing.png")
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{good}: ")
    assert f"cannot decode image {broken}" in result.stderr and "no image at" in result.stderr
    rows = json.loads(invoke("predict", trained, good, broken, "--json").stdout)
    assert rows[0]["label"] and rows[1]["label"] is None and "cannot decode" in rows[1]["error"]


def test_the_default_checkpoint_is_not_overwritten_by_another_run(two_classes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "net", *two_classes, "--epochs", "1", "--json"]
    first, second = (strict_json(invoke(*args).stdout)["checkpoint"] for _ in range(2))
    assert (first, second) == ("runs/net-seed123.safetensors", "runs/net-seed123-2.safetensors")
    assert strict_json(invoke(*args, "--force").stdout)["checkpoint"] == first


def test_json_reports_an_interruption_and_positions_read_alike(two_classes, tmp_path, monkeypatch):
    """SIGTERM mid-run: JSON on stdout says where; the resume line names the same position."""
    init = ptm_func.runs.signals.StopOnSignal.__init__
    monkeypatch.setattr(
        ptm_func.runs.signals.StopOnSignal,
        "__init__",
        lambda self, say=None, patient=False: setattr(self, "signal", 15) or setattr(self, "say", say),
    )
    out = tmp_path / "n.safetensors"
    result = invoke(
        "train", "net", *two_classes, "--epochs", "3", "--batch-size", "16", "--out", out, "--json"
    )
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    summary = strict_json(result.stdout)
    assert summary["interrupted_at"] == {"epoch": 1, "step": 1}
    assert "interrupted at epoch 1, step 1;" in result.stderr
    monkeypatch.setattr(ptm_func.runs.signals.StopOnSignal, "__init__", init)
    resumed = invoke("train", "net", "--resume", out)
    assert resumed.exit_code == 0 and "from epoch 1, step 1 on" in resumed.output
    assert [line["epoch"] for line in read_metrics(out.with_name("n.metrics.jsonl"))] == [1, 2, 3]


def test_compiling_runs_say_so(two_classes, tmp_path, monkeypatch):
    monkeypatch.setattr(ptm_func.runs.training, "will_compile", lambda config, device, model: True)
    result = invoke("train", "net", *two_classes, "--epochs", "1", "--out", tmp_path / "n.safetensors")
    assert result.exit_code == 0 and "compiling the train step" in result.stderr
    from ptm_func.training.compiling import will_compile
    from ptm_func.training.config import TrainConfig

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert will_compile(TrainConfig(epochs=20), cpu, get_model("net"))
    assert not will_compile(TrainConfig(epochs=19), cpu, get_model("net"))
    assert not will_compile(TrainConfig(epochs=100), cpu, get_model("batchnorm"))  # eager is faster there
    assert will_compile(TrainConfig(epochs=100), cuda, get_model("batchnorm"))
    assert will_compile(TrainConfig(epochs=1, compile=True), cpu, get_model("resdeep"))
    assert not will_compile(TrainConfig(epochs=100, compile=False), cuda, get_model("net"))


def test_classes_help_tells_the_folder_default():
    text = " ".join(invoke("train", "--help").output.replace("│", " ").split())
    assert "Default: airplane,bird (the book's) for CIFAR; every class folder of a folder" in text
    assert "or 'all'" in text and "one output per class" in text


def test_model_configs_are_typed_and_bounded():
    from ptm_func import ModelConfigError

    for config in (
        {"n_chans1": "16"},
        {"n_chans1": 16.0},
        {"n_blocks": True},
        {"tied": "yes"},
        {"n_blocks": 10**9},
    ):
        with pytest.raises(ModelConfigError):
            get_model("resdeep", **config)
