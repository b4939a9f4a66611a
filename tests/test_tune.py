"""ptm tune: the search space, a pruned study trained as members, best.json retrained bit for bit,
studies continued by the same command, and the errors of a bad request (one line, exit code)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptm_func.errors import SettingsError
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.runs.search_space import Dimension, Space, parse_dimension
from ptm_func.runs.study_report import show_study
from ptm_func.runs.tune import run_tune
from tests.cli_helpers import invoke, one_error_line
from tests.conftest import write_image_folder

optuna = pytest.importorskip("optuna")


def test_ranges_lists_and_fixed_values_parse():
    assert parse_dimension("lr", "1e-3:1e-1:log") == Dimension("lr", 1e-3, 1e-1, log=True)
    assert parse_dimension("momentum", "0:0.95") == Dimension("momentum", 0.0, 0.95)
    assert parse_dimension("n_chans1", "16,32,64") == Dimension("n_chans1", whole=True, choices=(16, 32, 64))
    assert parse_dimension("n_chans1", "8:64:int").whole
    assert parse_dimension("weight_decay", "5e-4") == 5e-4
    assert parse_dimension("seed", "7") == 7
    space = Space.parse({"lr": "1e-3:1e-1:log", "momentum": "0.9"})
    assert space.fixed == {"momentum": 0.9} and space.names() == ["lr"]


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("lr", "1e-1:1e-3", "LOW must be below HIGH"),
        ("lr", "0:1e-1:log", "a log range needs LOW > 0"),
        ("lr", "1e-3:1e-1:cubic", "takes LOW:HIGH"),
        ("lr", "fast", "takes numbers"),
        ("lr", "0.1,0.1", "distinct"),
        ("lr", "nan:1", "finite"),
        ("n_chans1", "16.5,32", "whole numbers"),
        ("epochs", "1:3", "cannot search"),
    ],
)
def test_bad_ranges_say_what_is_wrong(name, text, says):
    with pytest.raises(SettingsError, match=says):
        parse_dimension(name, text)


def test_grid_takes_lists_only():
    with pytest.raises(SettingsError, match="--sampler grid takes comma lists only; --lr is a range"):
        Space.parse({"lr": "1e-3:1e-1"}).grid()


def tune(folder, image_folder, **kwargs):
    """A quick study in `folder` (its journal and trials there)."""
    defaults = dict(
        space={"lr": "1e-3:1e-1:log", "momentum": "0:0.9"}, trials=5, batch=3, epochs=3, batch_size=16,
        data=str(image_folder), device="cpu", compile=False, storage=str(folder / "studies.journal"),
        out=folder / "trials", seed=3,
    )  # fmt: skip
    return run_tune("net", **{**defaults, **kwargs})


def test_a_study_trains_its_trials_as_runs_and_continues_when_run_again(image_folder, tmp_path):
    report = tune(tmp_path, image_folder, pruner="halving")
    assert report.trained_here == 5
    assert sum(report.counts.get(s, 0) for s in ("complete", "pruned")) == 5
    shown = show_study("net", str(tmp_path / "studies.journal"))
    assert shown.counts == report.counts and shown.rows == report.rows
    for row in report.rows:  # every complete trial points at its checkpoint, as ptm train leaves it
        ckpt = load_checkpoint(row["checkpoint"])
        assert ckpt.training["epochs_done"] == 3 and ckpt.training["val_accuracy"] == row["val_accuracy"]
    again = tune(tmp_path, image_folder, trials=7)  # the same command, a larger budget: 2 more
    assert again.trained_here == 2
    assert sum(again.counts.get(s, 0) for s in ("complete", "pruned")) == 7


def test_pruned_trials_stop_early_and_say_so(image_folder, tmp_path):
    # successive halving compares each epoch-1 value with all reported so far: a trial that
    # barely learns (lr 1e-6) after one that does (0.03) stops after epoch 1; seed 7 samples
    # 0.03, 1e-6, 1e-6, 1e-6, 0.03, 1e-6
    space = {"lr": "0.03,1e-6"}
    report = tune(
        tmp_path,
        image_folder,
        space=space,
        trials=6,
        batch=1,
        epochs=4,
        pruner="halving",
        sampler="random",
        seed=7,
    )
    from ptm_func.runs import studies

    loaded = optuna.load_study(
        study_name="net", storage=studies.open_storage(str(tmp_path / "studies.journal"), tmp_path)
    )
    pruned = [t for t in loaded.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert report.counts.get("pruned", 0) == len(pruned) > 0
    for trial in pruned:
        ckpt = load_checkpoint(trial.user_attrs["checkpoint"])
        assert ckpt.training["stopped_in_epoch"] == trial.user_attrs["epochs"] < 4
        assert ckpt.training["epochs_done"] == trial.user_attrs["epochs"]
        assert max(trial.intermediate_values) == trial.user_attrs["epochs"]


def test_the_same_seed_samples_the_same_trials(image_folder, tmp_path):
    one = tune(tmp_path / "a", image_folder, pruner="none")
    two = tune(tmp_path / "b", image_folder, pruner="none")
    params = lambda report: sorted((r["trial"], r["lr"], r["momentum"]) for r in report.rows)  # noqa: E731
    assert params(one) == params(two)


def test_best_json_retrains_bit_for_bit_with_ptm_train(image_folder, tmp_path):
    report = tune(tmp_path, image_folder, trials=3, pruner="none")
    best = json.loads(report.best_file.read_text())
    assert best["trial"] == report.rows[0]["trial"] and best["model"] == "net"
    out = tmp_path / "again.safetensors"
    done = invoke("train", "net", "--config", report.best_file, "--device", "cpu", "--out", out)  # its data
    assert done.exit_code == 0, done.output
    ours, theirs = load_file(out), load_file(best["checkpoint"])
    assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    lines = lambda path: [json.loads(line) for line in open(path)]  # noqa: E731
    again, trial = (
        lines(out.with_suffix(".metrics.jsonl")),
        lines(best["checkpoint"].replace(".safetensors", ".metrics.jsonl")),
    )
    assert [(e["loss"], e["val_accuracy"]) for e in again] == [(e["loss"], e["val_accuracy"]) for e in trial]


def test_config_for_another_model_is_one_line(image_folder, tmp_path):
    report = tune(tmp_path, image_folder, trials=1, pruner="none")
    done = invoke("train", "width", "--config", report.best_file, "--data", image_folder, "--device", "cpu")
    assert done.exit_code == 2
    assert "holds settings for 'net', not 'width'" in one_error_line(done.output)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--lr", "1:0"], 2, "LOW must be below HIGH"),
        (["--lr", "1e-3:1e-1", "--sampler", "anneal"], 2, "--sampler must be one of"),
        (["--lr", "1e-3:1e-1", "--pruner", "cut"], 2, "--pruner must be one of"),
        (["--lr", "1e-3:1e-1", "--sampler", "grid"], 2, "grid takes comma lists only"),
        (["--lr", "0.01,0.1", "--sampler", "grid", "--trials", "3"], 2, "has 2 points"),
        (["--trials", "0", "--lr", "1e-3:1e-1"], 2, "--trials must be >= 1"),
        (["--momentum", "0.9"], 2, "nothing to search"),
        (["--lr", "1e-3:1e-1", "--min-epochs", "9", "--epochs", "3"], 2, "--min-epochs must be in 1..3"),
        (
            ["--lr", "1e-3:1e-1", "--storage", "postgresql://u:pw@127.0.0.1:1/db"],
            1,
            "cannot open the study storage postgresql://u:***@127.0.0.1:1/db",
        ),
    ],
)
def test_bad_requests_are_one_line_before_any_training(image_folder, tmp_path, monkeypatch, args, code, says):
    monkeypatch.chdir(tmp_path)
    done = invoke("tune", "net", *args, "--data", image_folder, "--device", "cpu")
    assert done.exit_code == code, done.output
    line = one_error_line(done.output.splitlines()[-1])
    assert says in line and "pw@" not in done.output
    assert not (tmp_path / "runs" / "tune-net").exists() or not any(
        (tmp_path / "runs" / "tune-net").glob("trial-*")
    )


def test_show_names_the_studies_a_storage_holds(image_folder, tmp_path):
    tune(tmp_path, image_folder, trials=1, pruner="none")
    done = invoke("tune", "--show", "nets", "--storage", tmp_path / "studies.journal")
    assert done.exit_code == 2
    assert "no study 'nets'" in one_error_line(done.output) and "it holds: net" in done.output
    done = invoke("tune", "--show", "net", "--storage", tmp_path / "studies.journal", "--json")
    assert done.exit_code == 0 and json.loads(done.output)["counts"] == {"complete": 1}


def test_a_study_refuses_another_search_under_its_name(image_folder, tmp_path):
    tune(tmp_path, image_folder, trials=1, pruner="none")
    with pytest.raises(SettingsError, match="study 'net' searches something else"):
        tune(tmp_path, image_folder, trials=2, space={"lr": "1e-2:1e-1"})


def test_ptm_plot_draws_a_study(image_folder, tmp_path):
    pytest.importorskip("matplotlib")
    tune(tmp_path, image_folder, trials=4, batch=2, pruner="none")
    journal = tmp_path / "studies.journal"
    done = invoke("plot", "--study", "net", "--storage", journal, "--out", tmp_path / "study.png")
    assert done.exit_code == 0, done.output
    from PIL import Image

    with Image.open(tmp_path / "study.png") as image:  # history + one panel per parameter
        assert image.format == "PNG" and image.size[0] > 2.5 * image.size[1]
    done = invoke("plot", "runs/x.safetensors", "--study", "net", "--storage", journal)
    assert done.exit_code == 2 and "not both" in one_error_line(done.output)
    done = invoke("plot", "--study", "nope", "--storage", journal)
    assert done.exit_code == 2 and "no study 'nope'" in one_error_line(done.output)


def test_track_mirrors_every_trial(image_folder, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = tune(tmp_path, image_folder, trials=2, batch=2, pruner="none", track="tensorboard")
    for row in report.rows:
        events = EventAccumulator(str(row["checkpoint"]).replace(".safetensors", ".tb"))
        events.Reload()
        val = [e.value for e in events.Scalars("val_accuracy")]
        assert len(val) == 3 and val[-1] == pytest.approx(row["val_accuracy"], abs=1e-6)


def test_a_users_model_is_tuned_and_retrained_from_best_json(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reference = f"{Path(__file__).parents[1] / 'examples' / 'kernels.py'}:KernelNet"
    report = run_tune(
        reference, space={"lr": "1e-2:1e-1:log"}, trials=2, batch=2, epochs=1, batch_size=16, pruner="none",
        data=str(image_folder), device="cpu", kernel=(1, 3),
    )  # fmt: skip
    best = json.loads(report.best_file.read_text())
    assert best["reference"] == reference and best["settings"]["kernel"] == [1, 3]
    assert report.retrain == f"ptm train {reference} --config {report.best_file}"
    done = invoke("train", reference, "--config", report.best_file, "--data", image_folder, "--device", "cpu",
                  "--out", tmp_path / "again.safetensors")  # fmt: skip
    assert done.exit_code == 0, done.output
    ours, theirs = load_file(tmp_path / "again.safetensors"), load_file(best["checkpoint"])
    assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_trials_that_diverge_end_as_pruned_and_the_study_ends(image_folder, tmp_path):
    report = tune(tmp_path, image_folder, space={"lr": "0.1", "l2_lambda": "1e3:1e4:log"}, trials=2, batch=2)
    assert report.counts == {"pruned": 2}
    loaded = optuna.load_study(study_name="net", storage=journal_of(tmp_path))
    assert all(t.user_attrs["diverged_in_epoch"] == 1 for t in loaded.trials)


def test_a_grid_trains_every_point_once(image_folder, tmp_path):
    report = tune(
        tmp_path, image_folder, space={"lr": "0.01,0.03,0.1"}, trials=3, sampler="grid", pruner="none"
    )
    assert sorted(r["lr"] for r in report.rows) == [0.01, 0.03, 0.1] and report.best_file is not None


def test_a_study_keeps_its_data_and_its_folder(image_folder, tmp_path):
    tune(tmp_path, image_folder, trials=1, pruner="none")
    other = write_image_folder(tmp_path / "other", {"train": 8, "test": 4}, seed=5)
    with pytest.raises(SettingsError, match="study 'net' trains on other data"):
        tune(tmp_path, other, trials=2, pruner="none")
    with pytest.raises(SettingsError, match="holds the trials of study 'net'"):
        tune(tmp_path, image_folder, trials=1, pruner="none", study="another")


def journal_of(folder):
    from ptm_func.runs import studies

    return studies.open_storage(str(folder / "studies.journal"), folder)
