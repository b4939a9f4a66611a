"""kill -TERM during `ptm train` leaves a loadable checkpoint; --resume ends bitwise equal."""

import os
import signal
import subprocess
import sys
import time

import torch

from ptm_func.checkpoint import load_checkpoint

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


def test_sigterm_saves_and_resume_matches_uninterrupted(image_folder, tmp_path):
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

    straight = tmp_path / "straight.safetensors"
    full = subprocess.run(
        ptm(*run_args(image_folder, straight)), capture_output=True, text=True, env=env, timeout=300
    )
    assert full.returncode == 0, full.stderr

    a, b = load_checkpoint(interrupted), load_checkpoint(straight)
    assert a.training["progress"]["epoch"] == b.training["progress"]["epoch"] == 60
    for key in b.params:
        assert torch.equal(a.params[key], b.params[key]), key
