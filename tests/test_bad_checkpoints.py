"""Checkpoints that are refused, one line each: NaN weights, other classes, other models; and
loss_line's ranges. Tiny synthetic checkpoints (initial weights, saved with the metadata ptm
train writes): every test takes seconds."""

import importlib.util
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ptm_func.files.checkpoint import save_checkpoint
from ptm_func.nets.registry import get_model
from ptm_func.research.ensemble import ensemble_probabilities
from ptm_func.research.script import run_main
from tests.cli_helpers import invoke, one_error_line

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
runner = CliRunner()
BIRDS = ["airplane", "bird"]


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkpoint(path: Path, data: Path, classes=BIRDS, seed=0, model="net", poison=None) -> Path:
    """Initial weights saved as `ptm train` saves a run (data and classes in the metadata);
    `poison`: a key whose tensor becomes NaN."""
    net = get_model(model)
    params, state = net.init(seed)
    if poison is not None:
        params = {**params, poison: torch.full_like(params[poison], float("nan"))}
    training = {"classes": list(classes), "data": str(data), "config": {"seed": seed}}
    return save_checkpoint(path, net, params, state, training)


@pytest.fixture
def runs(image_folder, tmp_path):
    return {
        "a": checkpoint(tmp_path / "a.safetensors", image_folder, seed=1),
        "b": checkpoint(tmp_path / "b.safetensors", image_folder, seed=2),
        "cat": checkpoint(tmp_path / "cat.safetensors", image_folder, ["airplane", "cat"], seed=3),
        "width": checkpoint(tmp_path / "width.safetensors", image_folder, seed=4, model="width"),
        "nan": checkpoint(tmp_path / "nan.safetensors", image_folder, seed=5, poison="fc2.weight"),
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--start", "nan"],
        ["--start", "inf"],
        ["--start=-inf"],
        ["--stop", "nan"],
        ["--stop", "1e999"],
        ["--start", "abc"],
        ["--start", "2", "--stop", "1"],
    ],
)
def test_loss_line_refuses_non_finite_or_empty_ranges_in_one_line(args, capsys):
    with pytest.raises(SystemExit) as stopped:
        example("loss_line").main(["a.safetensors", *args])
    assert stopped.value.code == 2
    line = one_error_line(capsys.readouterr().err, None)  # argparse's prog: argv[0]
    assert "--start" in line or "--stop" in line


@pytest.mark.parametrize("name", ["soup", "loss_line"])
def test_examples_refuse_checkpoints_trained_on_different_classes(name, runs, tmp_path, capsys):
    args = [str(runs["a"]), str(runs["cat"]), "--out", str(tmp_path / "x.png")]
    assert run_main(lambda: example(name).main(args), f"{name}.py") == 2
    line = one_error_line(capsys.readouterr().err, f"{name}.py")
    assert "airplane, bird" in line and "airplane, cat" in line and str(runs["cat"]) in line
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name", ["soup", "loss_line"])
def test_examples_refuse_different_models_and_nan_weights(name, runs, tmp_path, capsys):
    mixed = [str(runs["a"]), str(runs["width"]), "--out", str(tmp_path / "x.png")]
    assert run_main(lambda: example(name).main(mixed), f"{name}.py") == 2
    assert "give checkpoints of one model" in one_error_line(capsys.readouterr().err, f"{name}.py")
    poisoned = [str(runs["a"]), str(runs["nan"]), "--out", str(tmp_path / "x.png")]
    assert run_main(lambda: example(name).main(poisoned), f"{name}.py") == 1
    line = one_error_line(capsys.readouterr().err, f"{name}.py")
    assert f"{runs['nan']} holds NaN or infinite weights (fc2.weight)" in line


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "NAN", "--device", "cpu"],
        ["eval", "A", "NAN", "--device", "cpu"],
        ["predict", "NAN", "IMAGE"],
        ["predict", "A", "NAN", "IMAGE"],
    ],
)
def test_eval_and_predict_refuse_a_checkpoint_with_nan_weights(command, runs, image_folder):
    files = {"NAN": runs["nan"], "A": runs["a"], "IMAGE": image_folder / "test" / "bird" / "0000.png"}
    result = invoke(*(files.get(a, a) for a in command))
    assert result.exit_code == 1, result.output
    line = one_error_line(result.output)
    assert f"{runs['nan']} holds NaN or infinite weights (fc2.weight)" in line


def test_info_notes_nan_weights_but_still_shows_the_model(runs):
    result = invoke("info", runs["nan"])
    assert result.exit_code == 0
    assert f"ptm: note: {runs['nan']} holds NaN or infinite weights" in result.output
    assert "total parameters: 18,090" in result.output


def test_an_ensemble_with_a_nan_member_refuses_instead_of_predicting_class_0():
    net = get_model("net")
    good = net.init(0)
    bad = ({k: torch.full_like(v, float("nan")) for k, v in good[0].items()}, good[1])
    with pytest.raises(ValueError, match="member 1 of 2 gives NaN"):
        ensemble_probabilities([(net, *good), (net, *bad)], torch.randn(4, 3, 32, 32))


@pytest.mark.parametrize("command", ["eval", "predict", "info"])
def test_a_checkpoint_whose_outputs_and_class_names_differ_is_refused(command, image_folder, tmp_path):
    """Issue 28 (7): 3 outputs and 2 class names: eval refused it, predict answered "class 2"."""
    net = get_model("net", n_classes=3)
    params, state = net.init(0)
    training = {"classes": BIRDS, "data": str(image_folder), "config": {"seed": 0}}
    path = save_checkpoint(tmp_path / "crafted.safetensors", net, params, state, training)
    image = next((image_folder / "test" / "bird").iterdir())
    args = {
        "eval": [path, "--data", image_folder, "--device", "cpu"],
        "predict": [path, image],
        "info": [path],
    }
    result = invoke(command, *args[command])
    assert result.exit_code != 0
    line = one_error_line(result.output)
    assert "its model has 3 outputs but it names 2 classes (airplane, bird)" in line


def test_repeated_class_names_are_refused_on_load_and_a_model_name_wins_over_a_folder(
    image_folder, tmp_path, monkeypatch
):
    """The second attack: ["airplane", "airplane", "bird"] was answered by predict; `ptm info net`
    failed where the working folder held a folder named net."""
    net = get_model("net", n_classes=3)
    training = {"classes": ["airplane", "airplane", "bird"], "data": str(image_folder), "config": {"seed": 0}}
    path = save_checkpoint(tmp_path / "twice.safetensors", net, *net.init(0), training)
    line = one_error_line(invoke("info", path).output)
    assert "its class names repeat (airplane, airplane, bird)" in line
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net").mkdir()
    assert invoke("info", "net").exit_code == 0
