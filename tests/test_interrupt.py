"""kill -TERM or -9 during `ptm train`: --resume ends bitwise equal, with every epoch recorded once."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

import ptm_func.runs.signals
import ptm_func.runs.training
from cli.main import app
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.files.records import read_metrics

ARGS = [
    "--data-dir",
    "",
    "--classes",
    "airplane,bird",
    "--epochs",
    "60",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--no-compile",
    "--momentum",
    "0.9",
    "--json",
]


def ptm(*args):
    return [sys.executable, "-c", "from cli.main import app; app()", *args]


def run_args(image_folder, out):
    args = list(ARGS)
    args[1] = str(image_folder)
    return ["train", "dropout", *args, "--out", str(out)]


@pytest.fixture(scope="module")
def straight(image_folder, tmp_path_factory):
    """The uninterrupted run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("straight") / "straight.safetensors"
    full = subprocess.run(ptm(*run_args(image_folder, out)), capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    return out


def assert_same_run(resumed, straight):
    """Same weights, and the same record: epochs 1..60 once each, with the same numbers."""
    a, b = load_checkpoint(resumed), load_checkpoint(straight)
    assert a.training["progress"]["epoch"] == b.training["progress"]["epoch"] == 60
    for key in b.params:
        assert torch.equal(a.params[key], b.params[key]), key
    ours = read_metrics(resumed.with_name(resumed.stem + ".metrics.jsonl"))
    theirs = read_metrics(straight.with_name(straight.stem + ".metrics.jsonl"))
    assert [line["epoch"] for line in ours] == list(range(1, 61))
    for key in ("loss", "train_accuracy_running", "val_accuracy"):
        assert [line[key] for line in ours] == [line[key] for line in theirs], key


def test_sigterm_saves_and_resume_matches_uninterrupted(image_folder, tmp_path, straight):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    interrupted = tmp_path / "interrupted.safetensors"
    proc = subprocess.Popen(
        ptm(*run_args(image_folder, interrupted)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    for line in proc.stderr:  # wait until training is under way
        if "epoch   2/60" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Resume with: ptm train dropout --resume" in err and "Traceback" not in err
    ckpt = load_checkpoint(interrupted)
    assert ckpt.training["progress"]["epoch"] < 60

    resumed = subprocess.run(
        ptm("train", "dropout", "--resume", str(interrupted), "--device", "cpu", "--no-compile"),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(interrupted, straight)


class Killed(BaseException):
    """kill -9, in-process: nothing after it runs (no save, no handler), only what is on disk stays."""


def test_kill_9_after_a_periodic_save_resumes_without_duplicate_epochs(
    image_folder, tmp_path, straight, monkeypatch
):
    """Checkpoint at epoch 4, killed after epoch 5's line: epoch 5 runs again, recorded once."""
    out = tmp_path / "killed.safetensors"
    log_epoch = ptm_func.runs.training.WarningRecord.log_epoch

    def dies_after_epoch_5(self, stats):
        log_epoch(self, stats)
        if stats.epoch == 5:
            raise Killed

    monkeypatch.setattr(ptm_func.runs.training.WarningRecord, "log_epoch", dies_after_epoch_5)
    runner = CliRunner()
    with pytest.raises(Killed):
        runner.invoke(app, [*run_args(image_folder, out), "--checkpoint-every", "4"], catch_exceptions=False)
    monkeypatch.setattr(ptm_func.runs.training.WarningRecord, "log_epoch", log_epoch)  # the kill is over
    assert load_checkpoint(out).training["progress"]["epoch"] == 4
    assert [line["epoch"] for line in read_metrics(out.with_name("killed.metrics.jsonl"))] == [1, 2, 3, 4, 5]

    resumed = runner.invoke(app, ["train", "dropout", "--resume", str(out), "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(out, straight)
