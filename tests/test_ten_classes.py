"""More than two classes: a run gets one output per class, and every command takes it.

The tiny generated ImageFolder (conftest) has three classes; CIFAR-10's ten come from a
stand-in for torchvision's reader. The oracle is the book's module with `n_classes` outputs,
loaded with strict=True.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cli.main import app
from ptm_func import get_model
from ptm_func.data.dataset import CIFAR10_CLASSES
from ptm_func.data.sources import load_dataset
from ptm_func.errors import ClassChoiceError, DataError
from ptm_func.files.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from ptm_func.files.convert import pt_to_safetensors, safetensors_to_pt
from ptm_func.files.resume import load_run
from ptm_func.runs.reporter import Silent
from ptm_func.runs.training import run_training
from tests.conftest import CLASSES
from tests.test_data_sources import fake_cifar10

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def three_class_run(image_folder, tmp_path_factory):
    """`ptm train net` on the 3-class folder: its default classes are all of the folder's."""
    out = tmp_path_factory.mktemp("three") / "net.safetensors"
    result = invoke("train", "net", "--data", image_folder, "--epochs", "2", "--batch-size", "16",
                    "--device", "cpu", "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout.splitlines()[-1])


def test_a_three_class_run_loads_strict_into_its_twin_and_predicts_as_it_does(three_class_run, image_folder):
    out, _ = three_class_run
    ckpt = load_checkpoint(out)
    assert ckpt.model.config == {"n_classes": 3} and ckpt.training["classes"] == list(CLASSES)
    twin = get_model("net", n_classes=3).module()
    twin.load_state_dict({**ckpt.params, **ckpt.state}, strict=True)  # the oracle
    images = load_dataset(image_folder, device="cpu").val.images
    logits, _ = ckpt.model.apply(ckpt.params, ckpt.state, images, train=False)
    assert logits.shape == (len(images), 3)
    torch.testing.assert_close(logits, twin.eval()(images), rtol=1e-5, atol=1e-6)


def test_eval_predict_and_info_work_with_three_classes(three_class_run, image_folder):
    out, summary = three_class_run
    result = invoke("eval", out, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["val_accuracy"] == pytest.approx(summary["val_accuracy"])
    image = next((image_folder / "test" / "cat").iterdir())
    result = invoke("predict", out, image, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    (prediction,) = json.loads(result.stdout)
    assert set(prediction["probabilities"]) == set(CLASSES)
    ranked = sorted(prediction["probabilities"].items(), key=lambda kv: -kv[1])
    assert [c for c, _ in prediction["top"]] == [c for c, _ in ranked]  # all three, best first
    result = invoke("predict", out, image, "--device", "cpu")
    assert "(then " in result.stdout and result.stdout.count(" 0.") == 3  # the runners-up too
    result = invoke("info", out)
    assert "'n_classes': 3" in result.stdout and "airplane, bird, cat" in result.stdout


def test_classes_all_is_every_class_of_the_source_in_its_order(image_folder, monkeypatch, tmp_path):
    assert load_dataset(image_folder, ["all"]).classes == CLASSES
    assert load_dataset("bundled", "all").classes == ("airplane", "bird")
    monkeypatch.setenv("PTM_DATA_DIR", str(tmp_path))
    (tmp_path / "cifar-10-batches-py").mkdir()
    fake_cifar10(monkeypatch, [])
    ten = load_dataset("auto", ["all"])
    assert ten.classes == CIFAR10_CLASSES
    assert ten.train.labels.tolist() == list(range(10)) * 2  # relabelled in CIFAR-10's order


def test_more_classes_offline_with_only_the_bundled_data_say_where_to_put_cifar10(tmp_path, monkeypatch):
    monkeypatch.setenv("PTM_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=f"put https://.* into {tmp_path}"):
        load_dataset("auto", ["all"])
    result = invoke("train", "net", "--classes", "all", "--epochs", "1", "--device", "cpu", "--out",
                    tmp_path / "x.safetensors")  # fmt: skip
    assert result.exit_code == 1 and "PTM_DATA_DIR" in result.output
    assert len(result.output.strip().splitlines()) == 2  # "loading data ..." and the one error line
    assert "Traceback" not in result.output


def test_a_model_refuses_another_class_count_before_reading_images(image_folder):
    with pytest.raises(ClassChoiceError, match="the model has 2 outputs but 3 classes"):
        load_dataset(image_folder, n_classes=2)
    assert get_model("net", n_classes=10).n_classes == 10
    assert get_model("net").with_classes(5).config == {"n_classes": 5}


def test_asking_for_n_classes_that_the_data_does_not_have_is_refused(image_folder, tmp_path):
    with pytest.raises(ClassChoiceError, match="the model has 5 outputs but 3 classes"):
        run_training("net", data=image_folder, n_classes=5, epochs=1, device="cpu",
                     out=tmp_path / "x.safetensors", reporter=Silent())  # fmt: skip


def test_a_three_class_run_resumes_bit_for_bit(image_folder, tmp_path):
    common = dict(data=image_folder, batch_size=16, device="cpu", reporter=Silent(), compile=False)
    whole = run_training("res", epochs=2, out=tmp_path / "whole.safetensors", **common)
    run_training("res", epochs=1, out=tmp_path / "half.safetensors", **common)
    resumed = run_training("res", epochs=2, resume=tmp_path / "half.safetensors", **common)
    assert resumed.result.train_state.params["fc2.weight"].shape == (3, 32)
    for key, value in whole.result.train_state.params.items():
        assert torch.equal(resumed.result.train_state.params[key], value), key
    _, _, config = load_run(tmp_path / "half.safetensors", "cpu")
    assert config.epochs == 2


def test_sweep_compare_and_ensembles_take_three_classes(image_folder, tmp_path):
    folder = tmp_path / "sweep"
    result = invoke("sweep", "net", "--data", image_folder, "--lr", "0.01,0.02", "--epochs", "1",
                    "--batch-size", "16", "--device", "cpu", "--out", folder, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    members = sorted(folder.glob("*seed*.safetensors"))
    members = [m for m in members if not m.name.endswith(".train.safetensors")]
    assert len(members) == 2 and all(load_checkpoint(m).model.n_classes == 3 for m in members)
    spec = json.loads((folder / "sweep.json").read_text())
    assert spec["model_config"] == {"n_classes": 3} and spec["classes"] == list(CLASSES)
    result = invoke("eval", *members, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["ensemble"]["val_accuracy"] <= 1
    result = invoke("compare", "net", "res", "--data", image_folder, "--epochs", "1", "--device", "cpu",
                    "--json-out", tmp_path / "c.json", "--chart", tmp_path / "c.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["net", "res"]
    assert rows[0]["params"] == sum(t.numel() for t in get_model("net", n_classes=3).init(0)[0].values())


def test_ten_class_book_pt_files_convert_both_ways(tmp_path):
    """A book-style module with 10 outputs, saved with torch.save: n_classes is read off fc2."""
    torch.manual_seed(0)
    twin = get_model("res", n_classes=10).module()
    torch.save(twin.state_dict(), tmp_path / "res10.pt")
    model = pt_to_safetensors(tmp_path / "res10.pt", tmp_path / "res10.safetensors", "res")
    assert model.config == {"n_chans1": 32, "n_classes": 10}
    safetensors_to_pt(tmp_path / "res10.safetensors", tmp_path / "back.pt")
    back = get_model("res", n_classes=10).module()
    back.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True), strict=True)
    for key, value in twin.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_old_checkpoints_without_n_classes_are_the_books_two(tmp_path):
    """Checkpoints written before n_classes existed record `{}` for net: 2 outputs."""
    model = get_model("net")
    params, state = model.init(0)
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, model, params, state)
    tensors = load_file(path)
    metadata = {**read_metadata(path), "config": "{}"}
    save_file(tensors, path, metadata=metadata)
    assert load_checkpoint(path).model.config == {"n_classes": 2}


def test_eval_relabels_classes_given_in_another_order_to_the_checkpoints_outputs(three_class_run):
    out, summary = three_class_run
    result = invoke("eval", out, "--classes", "cat,airplane,bird", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["val_accuracy"] == pytest.approx(summary["val_accuracy"])


def test_resume_keeps_the_saved_classes_and_says_it_ignores_others(image_folder, tmp_path):
    out = tmp_path / "r.safetensors"
    common = ["--data", image_folder, "--batch-size", "16", "--device", "cpu", "--no-compile"]
    assert invoke("train", "net", *common, "--epochs", "1", "--out", out).exit_code == 0
    result = invoke("train", "net", "--resume", out, "--epochs", "2", "--classes", "bird,cat",
                    "--batch-size", "16")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ignoring --classes" in result.output and "ignoring batch_size" not in result.output
    assert load_checkpoint(out).training["classes"] == list(CLASSES)


@pytest.mark.parametrize("rows,bias", [(0, 0), (1, 1), (3, 5)])
def test_a_crafted_fc2_is_refused_in_one_line_naming_it(rows, bias, tmp_path):
    state_dict = get_model("net").module().state_dict()
    state_dict["fc2.weight"], state_dict["fc2.bias"] = torch.zeros(rows, 32), torch.zeros(bias)
    torch.save(state_dict, tmp_path / "x.pt")
    result = invoke("convert", tmp_path / "x.pt", tmp_path / "x.safetensors")
    assert result.exit_code == 1 and "fc2" in result.output and "alike" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x.safetensors").exists()
