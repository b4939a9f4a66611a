"""The codebase's shape: help without torch, the public surface, the run API the CLI shares,
and the compile cache in the user's cache folder."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import ptm_func
from cli.main import app
from ptm_func.errors import SettingsError
from ptm_func.files.records import read_metrics

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "eval", "convert", "info", "predict", "compare", "plot", "sweep", "check", "show"]


def python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_help_of_every_command_does_not_import_torch():
    done = python(
        f"""
        import sys
        from typer.testing import CliRunner
        from cli.main import app
        for args in [["--help"]] + [[c, "--help"] for c in {COMMANDS!r}] + [["show", "conv", "--help"]]:
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0 and "Usage" in result.output, (args, result.output)
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_import_ptm_func_is_light_and_every_public_name_resolves():
    done = python("import sys, ptm_func; print('torch' in sys.modules, len(ptm_func.__all__))")
    assert done.returncode == 0 and done.stdout.split()[0] == "False", done.stderr
    for name in ptm_func.__all__:
        assert getattr(ptm_func, name) is not None, name
    with pytest.raises(AttributeError):
        ptm_func.no_such_name  # noqa: B018


def _tensors(path: Path) -> dict:
    return load_file(str(path))


def _curves(path: Path) -> list[dict]:
    keep = ("epoch", "loss", "train_accuracy_running", "val_accuracy")
    return [{k: line[k] for k in keep} for line in read_metrics(path)]


def test_run_training_from_python_leaves_what_ptm_train_leaves(image_folder, tmp_path, monkeypatch):
    """The same checkpoint tensors, training state, record lines and run.json keys."""
    monkeypatch.chdir(tmp_path)
    data = {"data": str(image_folder), "classes": ["airplane", "bird"], "device": "cpu"}
    cli_run = CliRunner().invoke(
        app,
        ["train", "dropout", "--data", str(image_folder), "--classes", "airplane,bird", "--device", "cpu"]
        + ["--epochs", "2", "--batch-size", "16", "--out", "cli/dropout.safetensors"],
    )
    assert cli_run.exit_code == 0, cli_run.output
    outcome = ptm_func.run_training(
        "dropout", epochs=2, batch_size=16, out="py/dropout.safetensors", reporter=ptm_func.Silent(), **data
    )
    assert outcome.checkpoint == Path("py/dropout.safetensors") and outcome.save_failed is None
    for name in ("dropout.safetensors", "dropout.train.safetensors"):
        ours, theirs = _tensors(Path("py") / name), _tensors(Path("cli") / name)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert _curves(outcome.record) == _curves(Path("cli/dropout.metrics.jsonl"))
    info = json.loads(Path("py/dropout.run.json").read_text())
    assert info.keys() == json.loads(Path("cli/dropout.run.json").read_text()).keys()
    assert info["result"]["val_accuracy"] == outcome.result.val_accuracy
    # and it resumes from Python as from the CLI: 2 more epochs, the record continues
    more = ptm_func.run_training("dropout", resume=outcome.checkpoint, epochs=4, reporter=ptm_func.Silent())
    assert more.result.train_state.epoch == 4
    assert [line["epoch"] for line in read_metrics(more.record)] == [1, 2, 3, 4]


def test_run_training_refuses_bad_settings_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad in ({"replicas": 0}, {"checkpoint_every": -1}, {"out": "x.pt"}, {"lr": -1.0}, {"epoch": 5}):
        with pytest.raises(SettingsError):
            ptm_func.run_training("net", device="cpu", reporter=ptm_func.Silent(), **bad)
    for grid in ({"lr": 0.01}, {"lr": ["0.01"]}, {"lrr": [0.01]}):  # a scalar, a string, a typo
        with pytest.raises(SettingsError):
            ptm_func.run_sweep("net", grid=grid, device="cpu", reporter=ptm_func.Silent())
    assert not any(tmp_path.iterdir())


def test_classes_may_be_one_comma_separated_string(image_folder):
    data = ptm_func.load_dataset(image_folder, "airplane, bird")
    assert data.classes == ("airplane", "bird")


def test_run_sweep_from_python_leaves_the_sweep_folder(image_folder, tmp_path):
    report = ptm_func.run_sweep(
        "net",
        grid={"lr": [0.01, 0.02]},
        epochs=1,
        batch_size=16,
        out=tmp_path / "sweep",
        data=image_folder,
        classes=["airplane", "bird"],
        device="cpu",
        reporter=ptm_func.Silent(),
    )
    assert not report.interrupted and len(report.rows) == 2
    names = sorted(p.name for p in report.folder.iterdir())
    assert "sweep.json" in names and "net-lr0.01-seed123.safetensors" in names
    assert "net-lr0.02-seed123.metrics.jsonl" in names
    spec = json.loads((report.folder / "sweep.json").read_text())
    assert spec["results"]["table"] == json.loads(json.dumps(report.rows))


def test_the_reporter_says_what_the_run_does(image_folder, tmp_path, capsys):
    ptm_func.run_training(
        "net",
        data=image_folder,
        classes=["airplane", "bird"],
        device="cpu",
        epochs=1,
        out=tmp_path / "n.safetensors",
    )
    said = capsys.readouterr().err
    assert "loading data" in said and "epoch   1/1" in said


def test_compiled_kernels_go_to_the_user_cache_folder(tmp_path):
    code = """
        import torch
        from ptm_func.training.compiling import compile_step
        step = compile_step(lambda x: (x * 2).tanh(), torch.device("cpu"))
        print(float(step(torch.ones(3)).sum()))
        """
    env_without = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env_without["PTM_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env_without,
    )
    assert done.returncode == 0, done.stderr
    assert any((tmp_path / "cache" / "inductor").rglob("*.py")), "no compiled kernel in the cache folder"
    # a folder the user chose for inductor wins
    chosen = tmp_path / "mine"
    done = python(
        code, env={"PTM_CACHE_DIR": str(tmp_path / "other"), "TORCHINDUCTOR_CACHE_DIR": str(chosen)}
    )
    assert done.returncode == 0, done.stderr
    assert any(chosen.rglob("*.py")) and not (tmp_path / "other").exists()


def test_a_sweep_chart_that_cannot_be_drawn_comes_after_the_results(image_folder, tmp_path, monkeypatch):
    """The table and sweep.json first; then one error line and exit 1 (a full disk at the end)."""
    import ptm_func.runs.sweep_run

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ptm_func.runs.sweep_run, "sweep_chart", disk_full)
    args = ["sweep", "net", "--lr", "0.01,0.02", "--epochs", "1", "--batch-size", "16", "--device", "cpu"]
    args += [
        "--data",
        str(image_folder),
        "--classes",
        "airplane,bird",
        "--out",
        str(tmp_path / "s"),
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert len(json.loads(result.stdout)["table"]) == 2
    assert "ptm: error: cannot draw" in result.stderr and "No space left" in result.stderr
    assert "results" in json.loads((tmp_path / "s" / "sweep.json").read_text())


def test_empty_compiled_kernels_are_dropped_from_the_cache(tmp_path, monkeypatch):
    """A 0-byte kernel (a build cut short) made every compiled step fall back to eager."""
    from ptm_func.training import tuning

    folder = tmp_path / "cache" / "inductor" / "ab"
    folder.mkdir(parents=True)
    empty_old, empty_new, whole = folder / "c1.main.so", folder / "c2.main.so", folder / "c3.main.so"
    empty_old.write_bytes(b"")
    empty_new.write_bytes(b"")  # maybe being written by another process right now
    whole.write_bytes(b"\x7fELF...")
    an_hour_ago = time.time() - 3600
    os.utime(empty_old, (an_hour_ago, an_hour_ago))
    os.utime(whole, (an_hour_ago, an_hour_ago))
    monkeypatch.setenv("PTM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert tuning.use_compile_cache() == tmp_path / "cache" / "inductor"
    assert not empty_old.exists() and empty_new.exists() and whole.exists()


def test_an_empty_inductor_cache_variable_counts_as_unset(tmp_path, monkeypatch):
    """TORCHINDUCTOR_CACHE_DIR= (empty) had sent inductor's files into the working folder."""
    from ptm_func.training import tuning

    monkeypatch.setenv("PTM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")
    assert tuning.use_compile_cache() == tmp_path / "cache" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
