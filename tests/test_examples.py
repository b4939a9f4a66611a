"""The examples/ scripts end to end on tiny data and checkpoints from `ptm train` (seconds)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ptm_func.data.sources import load_trained_on
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.research.ensemble import ensemble_accuracy
from ptm_func.research.evaluation import evaluate_split
from ptm_func.research.per_example import score_examples

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
runner = CliRunner()


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(folder: Path, out: Path, *extra: str, model: str = "net") -> Path:
    args = ["train", model, "--data", str(folder), "--classes", "airplane,bird", "--epochs", "2"]
    args += ["--batch-size", "8", "--device", "cpu", "--out", str(out), *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def runs(image_folder, tmp_path_factory):
    """A run, a second seed, and a one-seed pair differing in learning rate (a shared init)."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "a": train(image_folder, root / "a.safetensors"),
        "seed7": train(image_folder, root / "seed7.safetensors", "--seed", "7"),
        "lr": train(image_folder, root / "lr.safetensors", "--lr", "0.02"),
        "bn": train(image_folder, root / "bn.safetensors", model="batchnorm"),
        "bn7": train(image_folder, root / "bn7.safetensors", "--seed", "7", model="batchnorm"),
    }


def assert_png(path: Path):
    data = Path(path).read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000


def test_hard_examples_ranks_each_class_by_gradient_norm(runs, image_folder, tmp_path, capsys):
    out = tmp_path / "hard.png"
    result = example("hard_examples").main(
        [str(runs["a"]), "--data", str(image_folder), "--top", "3", "--out", str(out)]
    )
    assert_png(out)
    ckpt = load_checkpoint(runs["a"])
    data = load_trained_on(ckpt.training, str(image_folder))
    scores = score_examples(ckpt.model, ckpt.params, ckpt.state, data.train)
    rows = result["rows"]
    assert [r["label"] for r in rows] == ["airplane"] * 3 + ["bird"] * 3
    for label in (0, 1):
        mine = scores.gradient_norms[data.train.labels == label]
        shown = [r["gradient_norm"] for r in rows if r["label"] == data.classes[label]]
        assert shown == pytest.approx(mine.sort(descending=True).values[:3].tolist(), rel=1e-5)
    assert "hardest" not in capsys.readouterr().err


@pytest.mark.parametrize("pair", [False, True])
def test_loss_line_ends_are_the_runs(runs, image_folder, tmp_path, pair):
    out = tmp_path / "line.png"
    given = [str(runs["seed7"]), str(runs["a"])] if pair else [str(runs["a"])]
    args = [*given, "--data", str(image_folder), "--points", "5", "--out", str(out)]
    result = example("loss_line").main(args)
    assert_png(out)
    points = {p.alpha: p.evaluations for p in result["points"]}
    assert sorted(points) == [-0.25, 0.0, 0.125, 0.5, 0.875, 1.0, 1.25]
    end = load_checkpoint(runs["a"])
    data = load_trained_on(end.training, str(image_folder))
    assert points[1.0]["val"] == evaluate_split(end.model, end.params, end.state, data.val)
    if pair:
        begin = load_checkpoint(runs["seed7"])
        assert points[0.0]["val"] == evaluate_split(begin.model, begin.params, begin.state, data.val)
    else:  # the line starts at the run's initial weights
        assert points[0.0]["val"] == evaluate_split(end.model, *end.model.init(123), data.val)
    assert result["barrier"] >= 0


def test_soup_compares_the_average_with_the_ensemble_and_members(runs, image_folder, tmp_path):
    out = tmp_path / "soup.png"
    paths = [str(runs["a"]), str(runs["lr"])]
    result = example("soup").main([*paths, "--data", str(image_folder), "--out", str(out)])
    assert_png(out)
    names = [name for name, _ in result["rows"]]
    assert names[-2:] == ["uniform soup (mean weights)", "ensemble (mean probabilities)"]
    members = [load_checkpoint(p) for p in paths]
    data = load_trained_on(members[0].training, str(image_folder))
    expected = ensemble_accuracy([(m.model, m.params, m.state) for m in members], data.val)
    assert result["rows"][-1][1].accuracy == pytest.approx(expected["ensemble"])
    assert [ev.accuracy for _, ev in result["rows"][:2]] == pytest.approx(expected["members"])
    mean = {k: (members[0].params[k] + members[1].params[k]) / 2 for k in members[0].params}
    souped, by_hand = result["rows"][-2][1], evaluate_split(members[0].model, mean, {}, data.val)
    assert souped.loss == pytest.approx(by_hand.loss, rel=1e-5)
    assert souped.accuracy == by_hand.accuracy


@pytest.mark.parametrize(
    "name,args,needle",
    [
        ("soup", ["only-one.safetensors"], "two or more"),
        ("loss_line", ["a", "b", "c"], "one checkpoint"),
    ],
)
def test_bad_arguments_are_usage_errors(name, args, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        example(name).main(args)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("name", ["hard_examples", "loss_line", "soup"])
def test_a_missing_checkpoint_is_one_line_and_exit_1(name, tmp_path):
    missing = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    args = missing[:1] if name == "hard_examples" else missing
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"{name}.py: error: no checkpoint at {tmp_path}")


def test_batchnorm_runs_say_how_their_statistics_are_handled(runs, image_folder, tmp_path, capsys):
    bn = [str(runs["bn7"]), str(runs["bn"])]
    line = example("loss_line").main(
        [*bn, "--data", str(image_folder), "--points", "3", "--out", str(tmp_path / "l.png")]
    )
    assert "BatchNorm running statistics: recomputed at each point" in capsys.readouterr().out
    end = load_checkpoint(runs["bn"])
    data = load_trained_on(end.training, str(image_folder))
    assert line["points"][-2].alpha == 1.0  # recomputed statistics: not the checkpoint's own
    assert line["points"][-2].evaluations["val"].n == len(data.val)
    args = [*bn, "--data", str(image_folder), "--points", "3", "--running-stats", "interpolate"]
    interpolated = example("loss_line").main([*args, "--out", str(tmp_path / "i.png")])
    assert "interpolated between the two checkpoints' own" in capsys.readouterr().out
    at_end = interpolated["points"][-2]
    assert at_end.alpha == 1.0
    assert at_end.evaluations["val"] == evaluate_split(end.model, end.params, end.state, data.val)
    example("soup").main([*bn, "--data", str(image_folder), "--out", str(tmp_path / "s.png")])
    assert "BatchNorm running statistics of the soup: recomputed on" in capsys.readouterr().out


def test_run_main_exit_statuses(capsys):
    from ptm_func.research.script import run_main

    def interrupted():
        raise KeyboardInterrupt

    def bad_value():
        raise ValueError("no checkpoint at x")

    assert run_main(lambda: None, "s.py") == 0
    assert run_main(interrupted, "s.py") == 130
    assert run_main(bad_value, "s.py") == 1
    assert capsys.readouterr().err == "s.py: error: no checkpoint at x\n"


def test_seeds_trains_through_the_run_api_and_scores_the_ensemble(image_folder, tmp_path, capsys):
    seeds = example("seeds")
    args = ["net", "--seeds", "2", "--epochs", "1", "--batch-size", "8", "--data", str(image_folder)]
    args += ["--classes", "airplane,bird", "--device", "cpu", "--out", str(tmp_path / "s"), "--quiet"]
    result = seeds.main(args)
    paths = sorted((tmp_path / "s").glob("net-seed*[0-9].safetensors"))
    assert [p.name for p in paths] == ["net-seed123.safetensors", "net-seed124.safetensors"]
    members = [load_checkpoint(p) for p in paths]
    data = load_trained_on(members[0].training)
    oracle = ensemble_accuracy([(m.model, m.params, m.state) for m in members], data.val)
    assert result["ensemble"] == oracle["ensemble"]
    assert result["val"] == [m.training["val_accuracy"] for m in members]
    assert "ensemble of all 2" in capsys.readouterr().out
    before = [p.stat().st_mtime_ns for p in paths]
    assert seeds.main(args)["val"] == result["val"]  # run again: the finished seeds are kept
    assert [p.stat().st_mtime_ns for p in paths] == before


def test_kernels_exercise_trains_the_three_nets_through_the_run_api(image_folder, tmp_path, capsys):
    """Chapter 8, exercise 1 (examples/kernels.py): 5x5 and (1, 3) kernels as user modules."""
    kernels = example("kernels")
    args = ["--seeds", "2", "--epochs", "1", "--data", str(image_folder), "--device", "cpu",
            "--out", str(tmp_path / "k"), "--quiet"]  # fmt: skip
    table = kernels.main(args)
    assert {m: t["params"] for m, t in table.items()} == {"net": 18090, "net-5x5": 20906, "net-1x3": 17034}
    assert all(len(t["val"]) == 2 for t in table.values())
    assert "net-5x5" in capsys.readouterr().out
    assert kernels.main(args)["net-1x3"]["val"] == table["net-1x3"]["val"]  # finished seeds kept


def test_fooling_exercise_counts_confident_calls_and_finds_edits(image_folder, tmp_path, capsys):
    """Chapter 8, exercise 2 (examples/fooling.py), with a net of our own among the three."""
    import shutil

    fooling = example("fooling")
    others = shutil.copytree(image_folder, tmp_path / "others")
    for split in ("train", "test"):  # a second class of neither
        shutil.copytree(others / split / "cat", others / split / "dog")
    args = ["--data", str(image_folder), "--others", str(others), "--epochs", "1", "--images", "4",
            "--steps", "5", "--bisections", "3", "--out", str(tmp_path / "f"), "--quiet"]  # fmt: skip
    result = fooling.main(args)
    assert {c: r["images"] for c, r in result["confidence"].items()} == {"cat": 52, "dog": 52}
    assert list(result["edits"]) == ["net-small", "net", "width"]
    assert result["edits"]["net-small"]["params"] < result["edits"]["net"]["params"]
    assert all(len(e["airplane->bird"]) == 4 for e in result["edits"].values())
    for picture in ("confident.png", "edits.png"):
        assert (tmp_path / "f" / picture).stat().st_size > 10_000
    assert "median [quartiles]" in capsys.readouterr().out
