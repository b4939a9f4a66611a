"""The `ptm` CLI through Typer's runner: happy paths, JSON, and errors without tracebacks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ptm_func.files.records import read_metrics

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
        (("info", "resdeep", "--n-blocks", "0"), 2, "n_blocks must be an integer in 1..10,000"),
        (("info", "resdeep", "--n-blocks", "1000000000"), 2, "n_blocks must be an integer in 1..10,000"),
        (("train", "width", "--n-chans1", "1"), 2, "n_chans1 must be an integer in 2..1,024"),
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
    result = invoke(
        "train",
        "net",
        "--data-dir",
        str(image_folder),
        "--classes",
        "airplane,bird",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
    )
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


# --- predict / info CHECKPOINT / compare / show ---------------------------------------------


def is_png(path):
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


@pytest.fixture(scope="module")
def trained(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "net.safetensors"
    result = invoke(
        "train",
        "net",
        "--data-dir",
        str(image_folder),
        "--classes",
        "airplane,bird",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    return out


def test_predict_names_classes_and_notes_resizing(trained, image_folder, tmp_path):
    from PIL import Image

    bird = image_folder / "test" / "bird" / "0000.png"
    big = tmp_path / "big.png"
    Image.open(bird).resize((64, 40)).save(big)
    result = invoke("predict", str(trained), str(bird), str(big), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["label"] for r in rows] == ["bird", "bird"]
    assert rows[0]["note"] == "" and "resized from 64x40" in rows[1]["note"]
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    plain = invoke("predict", str(trained), str(bird))
    assert "bird" in plain.output and plain.exit_code == 0
    missing = invoke("predict", str(trained), str(tmp_path / "none.png"))
    assert missing.exit_code == 1 and "no image at" in missing.output


def test_info_on_a_checkpoint_shows_training_facts(trained):
    result = invoke("info", str(trained), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total"] == 18090 and summary["training"]["epochs_done"] == 3


def test_compare_writes_table_json_and_chart(image_folder, tmp_path):
    result = invoke(
        "compare",
        "net",
        "l2",
        "--data-dir",
        str(image_folder),
        "--classes",
        "airplane,bird",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--json-out",
        str(tmp_path / "c.json"),
        "--chart",
        str(tmp_path / "c.png"),
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["net", "l2"] and rows[0]["params"] == 18090
    assert is_png(tmp_path / "c.png") and is_png(tmp_path / "c-curves.png")
    assert [epoch["epoch"] for epoch in rows[1]["history"]] == [1]
    assert rows[1]["history"][0]["val_accuracy"] == rows[1]["val_accuracy"]
    assert "net" in result.stdout and "18,090" in result.stdout


def test_compare_without_matplotlib_still_prints_the_table(image_folder, tmp_path, monkeypatch):
    import ptm_func.reports.plot

    def missing():
        raise ptm_func.reports.plot.PlotUnavailable(
            "matplotlib is not installed: pip install 'ptm_func[plot]'"
        )

    monkeypatch.setattr(ptm_func.reports.plot, "pyplot", missing)
    result = invoke(
        "compare",
        "net",
        "--data-dir",
        str(image_folder),
        "--classes",
        "airplane,bird",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--json-out",
        str(tmp_path / "c.json"),
        "--chart",
        str(tmp_path / "c.png"),
    )
    assert result.exit_code == 0
    assert "no chart: matplotlib is not installed" in result.stderr
    assert "18,090" in result.stdout and not (tmp_path / "c.png").exists()


def test_show_conv_from_file_and_index(image_folder, tmp_path):
    from_file = invoke(
        "show", "conv", str(image_folder / "test" / "cat" / "0001.png"), "--out", str(tmp_path / "a.png")
    )
    assert from_file.exit_code == 0, from_file.output
    assert is_png(tmp_path / "a.png")
    from_index = invoke(
        "show", "conv", "--index", "3", "--data-dir", str(image_folder), "--out", str(tmp_path / "b.png")
    )
    assert from_index.exit_code == 0, from_index.output
    assert is_png(tmp_path / "b.png")
    neither = invoke("show", "conv")
    assert neither.exit_code == 2 and "IMAGE or --index" in neither.output


def test_conv_experiments_shapes_and_kernels():
    import torch

    from ptm_func.reports.conv_demo import conv_experiments

    image = torch.rand(3, 32, 32)
    panels = {title.split(":")[0]: out for _, _, title, out in conv_experiments(image)}
    assert panels["random 3x3 conv, no padding"].shape == (30, 30)
    assert panels["same conv, padding=1"].shape == (32, 32)
    assert panels["max-pool 2x2"].shape == (16, 16)
    blur = panels["blur"]
    torch.testing.assert_close(blur[5, 5], image[:, 4:7, 4:7].sum() / 9)
    edge = panels["vertical edges"]
    torch.testing.assert_close(edge[5, 5], (image[:, 4:7, 6] - image[:, 4:7, 4]).sum())


@pytest.mark.parametrize("command", ["train", "eval", "predict", "info", "convert", "compare", "plot"])
def test_every_subcommand_help_shows_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and f"Example: ptm {command}" in result.output


def test_show_conv_help_shows_an_example():
    assert "Example: ptm show conv" in invoke("show", "conv", "--help").output


def test_train_replicas_saves_each_and_reports_spread(image_folder, tmp_path):
    """--replicas K is ptm sweep --seeds K: a folder of K members, each with its own record."""
    out = tmp_path / "net-x2"
    data = [
        "--data-dir",
        str(image_folder),
        "--classes",
        "airplane,bird",
        "--batch-size",
        "16",
        "--device",
        "cpu",
    ]
    result = invoke("train", "net", "--replicas", "2", *data, "--epochs", "1", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["seeds"] == [123, 124] and len(summary["val_accuracy"]) == 2
    assert summary["checkpoints"] == [
        str(out / "net-seed123.safetensors"),
        str(out / "net-seed124.safetensors"),
    ]
    info = json.loads(invoke("info", summary["checkpoints"][1], "--json").stdout)
    assert info["training"]["config"]["seed"] == 124
    for path, val in zip(summary["checkpoints"], summary["val_accuracy"], strict=True):
        lines = read_metrics(Path(path).with_name(Path(path).stem + ".metrics.jsonl"))
        assert [line["epoch"] for line in lines] == [1] and lines[0]["val_accuracy"] == val
    spec = json.loads((out / "sweep.json").read_text())
    assert spec["results"]["table"][0]["ensemble_val"] == summary["ensemble_val_accuracy"]
    drawn = invoke("plot", *summary["checkpoints"], "--out", str(tmp_path / "ens.png"))
    assert drawn.exit_code == 0, drawn.output
    assert is_png(tmp_path / "ens.png")


@pytest.mark.parametrize(
    "extra,needle",
    [
        (("--replicas", "0"), "--replicas must be >= 1"),
        (("--replicas", "2", "--out", "x.safetensors"), "give --out a folder"),
        (("--replicas", "2", "--book-quirks"), "not with --replicas"),
    ],
)
def test_train_replicas_errors(extra, needle):
    result = invoke("train", "net", *extra)
    assert result.exit_code == 2 and needle in result.output


# --- a fresh offline machine; run records and ptm plot ---------------------------------------


@pytest.mark.slow
def test_main_job_on_a_fresh_offline_machine(tmp_path, monkeypatch, offline):
    """The README's main job with an empty cache and no network: bundled CIFAR-2, said on stderr."""
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "net", "--epochs", "2", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert offline, "CIFAR-10's download is tried first"
    assert "using the bundled CIFAR-2" in result.stderr and "Traceback" not in result.output
    summary = json.loads(result.stdout)
    assert summary["val_accuracy"] >= 0.78  # the bar; 0.7985 on torch 2.14.1
    ckpt = tmp_path / "runs" / "net-seed123.safetensors"
    assert summary["checkpoint"] == str(Path("runs") / "net-seed123.safetensors")
    info = json.loads(invoke("info", str(ckpt), "--json").stdout)
    assert info["training"]["data"] == "bundled:cifar2"
    lines = read_metrics(tmp_path / "runs" / "net-seed123.metrics.jsonl")
    assert [line["epoch"] for line in lines] == [1, 2]
    assert lines[-1]["val_accuracy"] == summary["val_accuracy"]
    evaluated = invoke("eval", str(ckpt), "--json")  # on the data it was trained on, no note
    assert evaluated.exit_code == 0 and "bundled" not in evaluated.stderr
    assert json.loads(evaluated.stdout)["val_accuracy"] == summary["val_accuracy"]


def test_train_writes_its_record_and_plot_draws_it(trained, tmp_path):
    lines = read_metrics(trained.with_name("net.metrics.jsonl"))
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert all(line["val_accuracy"] is not None for line in lines)
    run_info = json.loads(trained.with_name("net.run.json").read_text())
    assert run_info["config"]["epochs"] == 3 and run_info["data"].startswith("imagefolder:")
    assert run_info["result"]["val_accuracy"] == lines[-1]["val_accuracy"]
    result = invoke(
        "plot", str(trained), str(trained.with_name("net.metrics.jsonl")), "--out", str(tmp_path / "c.png")
    )
    assert result.exit_code == 0, result.output
    assert is_png(tmp_path / "c.png")
    from PIL import Image

    assert Image.open(tmp_path / "c.png").size == (1100, 420)


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (("plot", "/no/such.safetensors"), 1, "no run record at /no/such.metrics.jsonl"),
        (("plot", "RUN", "--out", "x.jpg"), 2, "--out must name a .png"),
        (("plot", "EMPTY"), 1, "has no finished epoch yet"),
        (("plot", "GARBLED"), 1, ":1 is not a metrics line"),
        (("train", "net", "--eval-every", "-1"), 2, "eval_every must be >= 0"),
        (("train", "net", "--data", "/no/such/dir", "--device", "cpu"), 1, "does not exist"),
    ],
)
def test_plot_and_data_errors(args, code, needle, trained, tmp_path):
    (tmp_path / "empty.metrics.jsonl").write_text("")
    (tmp_path / "garbled.metrics.jsonl").write_text("{{{\n")
    names = {"RUN": str(trained), "EMPTY": str(tmp_path / "empty.metrics.jsonl")}
    names["GARBLED"] = str(tmp_path / "garbled.metrics.jsonl")
    result = invoke(*(names.get(a, a) for a in args))
    assert result.exit_code == code, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_ctrl_c_while_importing_is_one_line_and_exit_130(capsys):
    from cli.entry import main

    def interrupted_import():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        main(interrupted_import)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "ptm: interrupted\n"


PTM = Path(sys.executable).with_name("ptm")


@pytest.mark.skipif(not PTM.exists(), reason="the ptm executable is not installed beside this Python")
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "net", "--epochs", "abc"], "Invalid value for '--epochs'"),
        (["train", "net", "--no-such-option"], "No such option: --no-such-option"),
        (["train"], "Missing argument 'model'"),
        (["check", "net", "--tolerance", "inf"], "--tolerance must be a number between 0 and 1"),
    ],
)
def test_usage_errors_of_the_executable_are_one_line_and_exit_2(args, needle):
    done = subprocess.run([str(PTM), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("ptm: error: "), done.stderr
    assert needle in done.stderr


@pytest.mark.skipif(not PTM.exists(), reason="the ptm executable is not installed beside this Python")
def test_the_executable_without_a_command_shows_the_help():
    done = subprocess.run([str(PTM)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Usage: ptm" in done.stderr and "ptm: error" not in done.stderr


def test_info_takes_every_name_train_takes():
    result = runner.invoke(app, ["info", "l2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"] == 18090  # l2 is Net with a penalty


def test_an_abort_is_one_line_and_exit_1(capsys):
    import typer

    from cli.entry import main

    def aborting_app(**kwargs):
        raise typer.Abort()

    with pytest.raises(SystemExit) as exit_info:
        main(lambda: aborting_app)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "ptm: aborted\n"


def test_book_quirks_on_data_stored_class_by_class_says_it_may_learn_little(image_folder, tmp_path):
    """A folder is read class by class; the notebook's unshuffled CIFAR-10 was mixed."""
    args = ["train", "net", "--data", str(image_folder), "--classes", "airplane,bird", "--epochs", "1"]
    quirky = runner.invoke(app, [*args, "--book-quirks", "--out", str(tmp_path / "q.safetensors")])
    assert quirky.exit_code == 0, quirky.output
    assert "--book-quirks trains unshuffled, in the stored order of" in quirky.output
    assert "class by class" in quirky.output
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "p.safetensors")])
    assert plain.exit_code == 0 and "stored order" not in plain.output
