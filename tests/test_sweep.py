"""`ptm sweep` and ensemble evaluation through the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli.main import app
from ptm_func import Net
from ptm_func.errors import SweepError
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.files.records import read_metrics
from ptm_func.runs.sweep import grid, table
from ptm_func.training.config import TrainConfig

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def small(image_folder):
    return ["--data", image_folder, "--classes", "airplane,bird", "--device", "cpu", "--batch-size", "16"]


@pytest.mark.slow
def test_the_acceptance_sweep_on_the_bundled_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(
        "sweep",
        "net",
        "--lr",
        "0.003,0.01,0.03",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--data",
        "bundled",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["lr"] for m in report["members"]] == [0.003, 0.01, 0.03]
    for member in report["members"]:
        assert 0.5 < member["val_accuracy"] < 1
        Net().load_state_dict(load_file(member["checkpoint"]), strict=True)
    assert report["table"][0]["val_mean"] == max(m["val_accuracy"] for m in report["members"])
    assert (tmp_path / "runs" / "sweep-net" / "sweep.png").stat().st_size > 1000
    # lr 0.01, seed 123 is the main job's run: the same number as `ptm train net --epochs 2`
    assert report["members"][1]["val_accuracy"] == 0.7985


def test_a_member_is_its_separate_train_run_bit_for_bit(small, tmp_path):
    result = invoke(
        "sweep",
        "net",
        *small,
        "--lr",
        "0.01,0.05",
        "--momentum",
        "0,0.9",
        "--epochs",
        "2",
        "--out",
        tmp_path / "sweep",
        "--json",
    )
    assert result.exit_code == 0, result.output
    members = {m["name"]: m for m in json.loads(result.stdout)["members"]}
    assert sorted(members) == [
        "net-lr0.01-mom0-seed123",
        "net-lr0.01-mom0.9-seed123",
        "net-lr0.05-mom0-seed123",
        "net-lr0.05-mom0.9-seed123",
    ]
    alone = invoke(
        "train",
        "net",
        *small,
        "--lr",
        "0.05",
        "--momentum",
        "0.9",
        "--epochs",
        "2",
        "--out",
        tmp_path / "alone.safetensors",
    )
    assert alone.exit_code == 0, alone.output
    ours = load_checkpoint(members["net-lr0.05-mom0.9-seed123"]["checkpoint"])
    theirs = load_checkpoint(tmp_path / "alone.safetensors")
    for key, value in theirs.params.items():
        assert torch.equal(ours.params[key], value), key
    record = read_metrics(tmp_path / "sweep" / "net-lr0.05-mom0.9-seed123.metrics.jsonl")
    assert [line["loss"] for line in record] == [
        line["loss"] for line in read_metrics(tmp_path / "alone.metrics.jsonl")
    ]
    spec = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert spec["swept"] == ["lr", "momentum"] and len(spec["results"]["table"]) == 4


def test_chunks_give_the_same_members(small, tmp_path):
    args = ["sweep", "net", *small, "--lr", "0.01,0.02,0.04", "--epochs", "1", "--json"]
    whole = json.loads(invoke(*args, "--out", tmp_path / "a").stdout)
    chunked = invoke(*args, "--out", tmp_path / "b", "--chunk", "2")
    assert chunked.exit_code == 0 and "chunk 2/2" in chunked.stderr
    assert [m["val_accuracy"] for m in json.loads(chunked.stdout)["members"]] == [
        m["val_accuracy"] for m in whole["members"]
    ]


def test_sigterm_then_resume_equals_the_uninterrupted_sweep(image_folder, tmp_path):
    base = ["sweep", "dropout", "--data", str(image_folder), "--classes", "airplane,bird", "--device", "cpu"]
    base += ["--batch-size", "8", "--lr", "0.01,0.03", "--momentum", "0.9", "--epochs", "40", "--no-compile"]
    code = "from cli.main import app; app()"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *base, "--out", str(tmp_path / "cut")],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    for line in proc.stderr:
        if "epoch   2/40" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"Resume with: ptm sweep --resume {tmp_path / 'cut'}" in err and "Traceback" not in err
    resumed = subprocess.run(
        [sys.executable, "-c", code, "sweep", "--resume", str(tmp_path / "cut")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(
        [sys.executable, "-c", code, *base, "--out", str(tmp_path / "whole")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr
    for name in ("dropout-lr0.01-seed123", "dropout-lr0.03-seed123"):
        a, b = (load_checkpoint(tmp_path / f / f"{name}.safetensors") for f in ("cut", "whole"))
        for key, value in b.params.items():
            assert torch.equal(a.params[key], value), (name, key)
        epochs = [line["epoch"] for line in read_metrics(tmp_path / "cut" / f"{name}.metrics.jsonl")]
        assert epochs == list(range(1, 41))


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["sweep", "net", "--lr", "0.1,abc"], 2, "--lr takes comma-separated numbers"),
        (["sweep", "net", "--lr", "0.1,0.10"], 2, "give distinct values"),
        (["sweep", "net", "--lr", "0.1,-1"], 2, "lr must be a positive number"),
        (["sweep", "net", "--momentum", "nan"], 2, "momentum must be a finite number"),
        (["sweep", "net", "--seeds", "0"], 2, "--seeds must be >= 1"),
        (["sweep", "net", "--chunk", "0"], 2, "--chunk must be >= 1"),
        (["sweep"], 2, "give a MODEL to sweep"),
        (["sweep", "net", "--resume", "OUT"], 2, "give no MODEL"),
        (["sweep", "--resume", "OUT"], 1, "holds no sweep.json: not a sweep folder"),
        (["sweep", "net", "--out", "OUT"], 2, "holds files already"),
    ],
)
def test_sweep_errors_are_one_line(args, code, needle, tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    result = invoke(*[str(tmp_path) if a == "OUT" else a for a in args])
    assert result.exit_code == code, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_grid_order_names_and_table():
    members = grid("net", TrainConfig(epochs=1), {"lr": [0.1, 0.01], "weight_decay": [0.0, 5e-4]}, [1, 2])
    assert [m.name for m in members[:3]] == [
        "net-lr0.1-wd0-seed1",
        "net-lr0.1-wd0-seed2",
        "net-lr0.1-wd0.0005-seed1",
    ]
    assert len(members) == 8 and members[-1].config.lr == 0.01 and members[-1].config.weight_decay == 5e-4
    with pytest.raises(SweepError, match="cannot sweep"):
        grid("net", TrainConfig(), {"epochs": [1, 2]}, [1])
    results = [
        {"lr": 0.1, "val_accuracy": 0.8, "train_accuracy": 0.9, "diverged_in_epoch": None},
        {"lr": 0.1, "val_accuracy": 0.6, "train_accuracy": 0.7, "diverged_in_epoch": None},
        {"lr": 1.0, "val_accuracy": 0.75, "train_accuracy": 0.75, "diverged_in_epoch": None},
        {"lr": 1.0, "val_accuracy": None, "train_accuracy": None, "diverged_in_epoch": 3},
    ]
    rows = table(results, ["lr"])
    assert [r["lr"] for r in rows] == [1.0, 0.1]  # 0.75 beats 0.7
    assert rows[1]["val_mean"] == pytest.approx(0.7) and rows[1]["val_std"] == pytest.approx(0.1)
    assert rows[0]["diverged"] == 1 and rows[0]["seeds"] == 2


def test_ensembles_in_eval_predict_and_train(small, image_folder, tmp_path):
    out = tmp_path / "dropout-x3"
    trained = invoke("train", "dropout", *small, "--replicas", "3", "--epochs", "1", "--out", out, "--json")
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout)
    assert 0 <= summary["ensemble_val_accuracy"] <= 1
    paths = summary["checkpoints"]
    evaluated = invoke("eval", *paths, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert [m["val_accuracy"] for m in report["members"]] == summary["val_accuracy"]
    assert report["ensemble"]["val_accuracy"] == summary["ensemble_val_accuracy"]
    assert "ensemble of 3 (mean of probabilities)" in invoke("eval", *paths).output

    image = image_folder / "test" / "bird" / "0000.png"
    several = json.loads(invoke("predict", *paths, image, "--json").stdout)
    expanded = json.loads(invoke("predict", paths[0], "--ensemble", image, "--json").stdout)
    members = [json.loads(invoke("predict", p, image, "--json").stdout)[0]["probabilities"] for p in paths]
    mean_bird = sum(m["bird"] for m in members) / 3
    assert several[0]["probabilities"]["bird"] == pytest.approx(mean_bird, abs=1e-6)
    assert expanded == several
    result = invoke("predict", paths[0], "--ensemble", image)
    assert result.exit_code == 0 and "ensemble of 3 checkpoints" in result.output
    # from another folder, with the folder moved: members are found beside the checkpoint
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    out.rename(moved)
    elsewhere = subprocess.run(
        [sys.executable, "-c", "from cli.main import app; app()", "predict"]
        + ["moved/dropout-seed124.safetensors", "--ensemble", str(image), "--json"],
        cwd=moved.parent, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )  # fmt: skip
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert json.loads(elsewhere.stdout) == several


def test_an_ensemble_needs_the_same_classes(small, image_folder, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert invoke("train", "net", *small, "--epochs", "1", "--out", a).exit_code == 0
    other = ["--data", image_folder, "--classes", "bird,cat", "--device", "cpu", "--epochs", "1", "--out", b]
    assert invoke("train", "net", *other).exit_code == 0
    result = invoke("eval", a, b)
    assert result.exit_code == 1 and "trained on different classes" in result.output
    image = Path(image_folder) / "test" / "bird" / "0000.png"
    assert "different classes" in invoke("predict", a, b, image).output


def test_a_sweep_that_cannot_save_rescues_its_members(small, tmp_path, monkeypatch):
    import ptm_func.runs.sweep
    from ptm_func.errors import CheckpointError

    save_runs = ptm_func.runs.sweep.save_runs
    folder = tmp_path / "sweep"

    def disk_full_in_the_folder(runs):
        if any(Path(path).parent == folder for path, *_ in runs):
            raise CheckpointError(f"cannot write checkpoint {folder}: No space left on device")
        return save_runs(runs)

    monkeypatch.setattr(ptm_func.runs.sweep, "save_runs", disk_full_in_the_folder)
    result = invoke("sweep", "net", *small, "--lr", "0.01,0.02", "--epochs", "1", "--out", folder)
    assert result.exit_code == 1 and "Traceback" not in result.output
    rescue = Path(result.output.split("were saved to ")[1].split()[0])
    names = sorted(p.name for p in rescue.glob("*.safetensors"))
    assert names == [
        f"net-lr{lr}-seed123{kind}.safetensors" for lr in ("0.01", "0.02") for kind in ("", ".train")
    ]
    for path in rescue.iterdir():
        path.unlink()
    rescue.rmdir()
