"""A sweep resumes whatever chunks or ranks it stopped with: members are regrouped by the
position each saved, and end bitwise equal to the uninterrupted sweep."""

import json
import os
import subprocess
import sys

import pytest
import torch

import ptm_func
import ptm_func.runs.sweep_run
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.files.records import read_metrics
from ptm_func.runs.signals import StopOnSignal

LRS = [0.01, 0.02, 0.03, 0.04]
NAMES = [f"net-lr{lr:g}-seed123" for lr in LRS]


def sweep(folder, image_folder, **more):
    return ptm_func.run_sweep(
        "net", grid={"lr": LRS}, epochs=2, batch_size=16, momentum=0.9, compile=False, out=folder,
        data=image_folder, classes=["airplane", "bird"], device="cpu", reporter=ptm_func.Silent(), **more,
    )  # fmt: skip


def stop_after(steps: int):
    """A StopOnSignal that asks to stop after `steps` polls (one per step), as SIGTERM would."""

    class StopAfter(StopOnSignal):
        polls = 0

        def __call__(self) -> bool:
            StopAfter.polls += 1
            if StopAfter.polls >= steps:
                self.signal = 15
            return super().__call__()

    return StopAfter


def set_chunk(folder, chunk: int) -> None:
    spec = json.loads((folder / "sweep.json").read_text())
    spec["chunk"] = chunk
    (folder / "sweep.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def straight(image_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight") / "sweep"
    sweep(folder, image_folder)
    return folder


def assert_like_straight(folder, straight, exact=True):
    for name in NAMES:
        ours, theirs = (load_checkpoint(f / f"{name}.safetensors").params for f in (folder, straight))
        for key, value in theirs.items():
            if exact:
                assert torch.equal(ours[key], value), (name, key)
            else:  # --nproc workers run 1 thread each: other kernels, float noise only
                torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6)
        assert [line["epoch"] for line in read_metrics(folder / f"{name}.metrics.jsonl")] == [1, 2]


def test_members_saved_at_different_positions_resume_together(image_folder, tmp_path, monkeypatch, straight):
    """Stopped in a chunk of 4 at step 2, then (resumed with --chunk 1) with the first member at
    step 3: one chunk of 4 used to fail ("hold no save in common"); now each position trains as
    a group."""
    folder = tmp_path / "cut"
    monkeypatch.setattr(ptm_func.runs.sweep_run, "StopOnSignal", stop_after(2))
    assert sweep(folder, image_folder, chunk=4, stop_on_signals=False).interrupted
    monkeypatch.setattr(ptm_func.runs.sweep_run, "StopOnSignal", stop_after(1))
    assert ptm_func.run_sweep(resume=folder, chunk=1, device="cpu", reporter=ptm_func.Silent()).interrupted
    positions = {name: load_checkpoint(folder / f"{name}.safetensors").training["progress"] for name in NAMES}
    assert [positions[name]["step_in_epoch"] for name in NAMES] == [3, 2, 2, 2]  # 5 steps an epoch
    set_chunk(folder, 4)
    monkeypatch.undo()
    report = ptm_func.run_sweep(resume=folder, device="cpu", reporter=ptm_func.Silent())
    assert not report.interrupted and len(report.rows) == 4
    assert_like_straight(folder, straight)


@pytest.mark.slow
def test_a_sweep_stopped_in_one_process_resumes_over_two_ranks(image_folder, tmp_path, monkeypatch, straight):
    """Rank 0 used to get a chunk of one started and one unstarted member ("chunk is incomplete")."""
    folder = tmp_path / "cut"
    monkeypatch.setattr(ptm_func.runs.sweep_run, "StopOnSignal", stop_after(3))
    assert sweep(folder, image_folder, chunk=2, stop_on_signals=False).interrupted
    env = {**os.environ, "PTM_DIST_TIMEOUT": "30"}
    command = [sys.executable, "-c", "from cli.main import app; app()", "sweep", "--resume", str(folder)]
    resumed = subprocess.run([*command, "--nproc", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert_like_straight(folder, straight, exact=False)


def test_replicas_stopped_midway_resume_to_the_uninterrupted_replicas(image_folder, tmp_path, monkeypatch):
    """--replicas used to lose everything on Ctrl-C; now it is a sweep of seeds, and resumes."""
    tiny = {
        "data": image_folder,
        "classes": ["airplane", "bird"],
        "device": "cpu",
        "reporter": ptm_func.Silent(),
    }
    tiny.update(epochs=2, batch_size=16, compile=False, momentum=0.9)
    whole = ptm_func.run_training("dropout", replicas=2, out=tmp_path / "whole", **tiny)
    monkeypatch.setattr(ptm_func.runs.sweep_run, "StopOnSignal", stop_after(7))
    cut = ptm_func.run_training("dropout", replicas=2, out=tmp_path / "cut", stop_on_signals=False, **tiny)
    assert cut.interrupted and not cut.summary
    monkeypatch.undo()
    with pytest.raises(ptm_func.SettingsError, match="'dropout' replicas, not 'net'"):
        ptm_func.run_training("net", resume=tmp_path / "cut", reporter=ptm_func.Silent())
    done = ptm_func.run_training("dropout", resume=tmp_path / "cut", reporter=ptm_func.Silent())
    assert done.summary["val_accuracy"] == whole.summary["val_accuracy"]
    assert done.summary["ensemble_val_accuracy"] == whole.summary["ensemble_val_accuracy"]
    for ours, theirs in zip(done.summary["checkpoints"], whole.summary["checkpoints"], strict=True):
        a, b = load_checkpoint(ours).params, load_checkpoint(theirs).params
        assert all(torch.equal(a[k], b[k]) for k in b)
        assert [line["epoch"] for line in read_metrics(ours.replace(".safetensors", ".metrics.jsonl"))] == [
            1,
            2,
        ]


def test_sweep_resume_says_which_options_it_ignores(straight, capsys):
    """Issue 21: --lr, --seeds and --epochs were ignored without a word."""
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(
        app,
        [
            "sweep",
            "--resume",
            str(straight),
            "--lr",
            "0.5",
            "--seeds",
            "3",
            "--epochs",
            "9",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "resuming the sweep as planned in sweep.json; ignoring lr, epochs, seeds" in result.output


def test_replicas_are_not_split_over_ranks_of_ptm_train(tmp_path):
    """Each rank would have run the whole sweep: --nproc belongs to ptm sweep."""
    from ptm_func.training.distributed import World

    for request in ({"replicas": 2}, {"resume": tmp_path}):
        with pytest.raises(ptm_func.SettingsError, match="split members over ranks with ptm sweep --nproc"):
            ptm_func.run_training("net", world=World(0, 2, 0), reporter=ptm_func.Silent(), **request)
