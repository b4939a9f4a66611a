"""Issue 21, round 3: inputs refused, plot and convert without needless failures, help text, charts.

Tiny synthetic checkpoints (initial weights, saved with the metadata ptm train writes) and
records: every test takes seconds.
"""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ptm_func.reports.plot as plot
from cli.main import app
from ptm_func.files.checkpoint import save_checkpoint
from ptm_func.nets.registry import get_model
from ptm_func.research.ensemble import ensemble_probabilities
from ptm_func.research.script import run_main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
runner = CliRunner()
BIRDS = ["airplane", "bird"]


def invoke(*args, **extra):
    return runner.invoke(app, [str(a) for a in args], **extra)


def one_error_line(text: str, name: str | None = "ptm") -> str:
    """The single `NAME: error: ...` line of `text` (any NAME for None), asserting it is the only line."""
    (line,) = text.strip().splitlines()
    assert re.match(rf"{re.escape(name) if name else '[^ ]+'}: error: ", line), line
    return line


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


# --- (6) inputs that are refused ------------------------------------------------------------


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


# --- (8) ptm plot ---------------------------------------------------------------------------


def record(path: Path, epochs: list[int], planned: int = 10) -> Path:
    lines = [
        {"epoch": e, "epochs": planned, "loss": 1 / e, "train_accuracy_running": 0.5 + e / 100}
        | {"val_accuracy": 0.5 + e / 200, "seconds": 1.0, "samples_per_second": 1.0}
        for e in epochs
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_plot_skips_a_run_without_epochs_and_draws_the_others(tmp_path):
    full = record(tmp_path / "full.metrics.jsonl", list(range(1, 11)))
    empty = record(tmp_path / "empty.metrics.jsonl", [])
    result = invoke("plot", empty, full, "--out", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert f"ptm: note: skipped {empty}: no finished epoch yet" in result.output
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
    default = invoke("plot", empty, full)  # the default name comes from the first run drawn
    assert default.exit_code == 0 and (tmp_path / "full.curves.png").exists()
    nothing = invoke("plot", empty, empty, "--out", tmp_path / "d.png")
    assert nothing.exit_code == 1
    assert "have no finished epoch yet" in one_error_line(nothing.output)


def test_plot_warns_about_repeated_and_out_of_order_epochs_and_draws_them_in_order(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plot, "_draw", lambda ax, lines, *a: drawn.append([x["epoch"] for x in lines]) or 1)
    odd = record(tmp_path / "odd.metrics.jsonl", [1, 2, 2, 3, 5, 4])
    result = invoke("plot", odd, "--out", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert f"ptm: warning: {odd}: epoch 2 appears 2 times" in result.output
    assert f"ptm: warning: {odd}: epochs out of order (epoch 4 after epoch 5)" in result.output
    assert drawn and all(epochs == [1, 2, 3, 4, 5] for epochs in drawn)
    lines, problems = plot.tidy_epochs([{"epoch": 1, "v": 1}, {"epoch": 1, "v": 2}])
    assert lines == [{"epoch": 1, "v": 2}] and len(problems) == 1  # the last line of an epoch wins
    clean = record(tmp_path / "clean.metrics.jsonl", [1, 2, 3])
    assert "warning" not in invoke("plot", clean, "--out", tmp_path / "e.png").output


# --- (11) convert, predict --device, help text ----------------------------------------------


def test_a_pt_that_ptm_wrote_converts_back_without_model(tmp_path):
    for name, config in [("width", {"n_chans1": 16}), ("res", {"n_chans1": 8}), ("dropout", {})]:
        net = get_model(name, **config)
        save_checkpoint(tmp_path / "a.safetensors", net, *net.init(3))
        assert invoke("convert", tmp_path / "a.safetensors", tmp_path / "a.pt").exit_code == 0
        book = net.module()
        book.load_state_dict(
            torch.load(tmp_path / "a.pt", weights_only=True), strict=True
        )  # still the book's
        back = invoke("convert", tmp_path / "a.pt", tmp_path / "b.safetensors")
        assert back.exit_code == 0, back.output
        assert f"({name}, {net.config})" in back.output


@pytest.mark.parametrize(
    "name,options",
    [("net", "--model net, --model width or --model dropout"), ("depth", "--model depth or --model res")],
)
def test_an_ambiguous_book_pt_is_a_usage_error_naming_the_candidates(name, options, tmp_path):
    torch.save(get_model(name).module().state_dict(), tmp_path / "book.pt")  # what the book writes
    result = invoke("convert", tmp_path / "book.pt", tmp_path / "out.safetensors")
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert str(tmp_path / "book.pt") in line and line.endswith(f"say which: {options}")


def test_a_pt_record_gives_the_model_only_and_an_unknown_one_is_ignored(tmp_path):
    state_dict = get_model("net").module().state_dict()
    state_dict._metadata[""]["ptm_func_model"] = '{"model": "width", "config": {"n_chans1": 64}}'
    torch.save(state_dict, tmp_path / "w.pt")
    result = invoke("convert", tmp_path / "w.pt", tmp_path / "w.safetensors")
    # the config read off the shapes
    assert result.exit_code == 0 and "(width, {'n_chans1': 16, 'n_classes': 2})" in result.output
    state_dict._metadata[""]["ptm_func_model"] = '{"model": "vgg"}'
    torch.save(state_dict, tmp_path / "v.pt")
    unknown = invoke("convert", tmp_path / "v.pt", tmp_path / "v.safetensors")
    assert unknown.exit_code == 2 and "say which: --model net" in one_error_line(unknown.output)


COMMANDS = ["train", "eval", "convert", "info", "predict", "compare", "plot", "sweep", "check"]


def help_of(*command, width=80):
    result = invoke(*command, "--help", terminal_width=width)
    assert result.exit_code == 0
    return result.output


def test_predict_device_defaults_to_auto_like_every_command():
    for command in COMMANDS:
        text = help_of(command)
        if "--device" in text:
            assert re.search(
                r"--device <str>\s+auto \(cuda when present\), cpu or cuda\.\s+\[default:\s+auto\]", text
            ), command


@pytest.mark.parametrize("width", [60, 80])
def test_the_command_lists_never_cut_a_summary(width):
    for listing in (help_of(width=width), help_of("show", width=width)):
        commands = listing.split("Commands:")[1]
        assert "..." not in commands, commands
    assert "Show a model's parameter tensors" in help_of(width=width)


def test_help_has_no_bool_metavars_run_on_examples_or_repeated_examples():
    pages = {command: help_of(command, width=100) for command in COMMANDS} | {
        "show conv": help_of("show", "conv")
    }
    for command, text in pages.items():
        assert "<bool>" not in text, command
        for line in text.splitlines():  # each example is its own paragraph
            assert line.count("Example:") <= 1 and (
                line.strip().startswith("Example:") or "Example:" not in line
            )
    options = pages["sweep"].split("Options:")[1]
    assert options.count("0.003,0.01,0.03") == 1
    examples = re.findall(r"e\.g\. ([0-9.,e-]+)", options)
    assert len(examples) == len(set(examples)) >= 5  # each list option its own example


# --- (12) charts ----------------------------------------------------------------------------


@pytest.fixture
def figures(monkeypatch):
    """What each chart drawn shows: its title, and each panel's title, y label and images."""
    seen = []
    save = plot.save_figure

    def recording(fig, plt, path, dpi=None):
        suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
        panels = [(ax.get_title(), ax.get_ylabel(), len(ax.images)) for ax in fig.axes if ax.get_visible()]
        seen.append(
            {"title": suptitle, "panels": panels, "errorbars": sum(len(ax.containers) for ax in fig.axes)}
        )
        return save(fig, plt, path, dpi)

    monkeypatch.setattr(plot, "save_figure", recording)
    return seen


def test_compare_charts_say_epochs_data_seed_and_cut_resdeep_blocks(image_folder, tmp_path, figures):
    result = invoke(
        "compare", "net", "resdeep", "--epochs", "1", "--resdeep-blocks", "2", "--data", image_folder,
        "--classes", "airplane,bird", "--device", "cpu", "--seed", "5",
        "--json-out", tmp_path / "c.json", "--chart", tmp_path / "c.png",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bars, curves = figures
    title = " ".join(bars["panels"][0][0].split())  # the bar chart's axes title, unwrapped
    assert title.startswith("chapter-8 comparison: 1 epoch, imagefolder:") and "seed 5" in title
    assert title.endswith("resdeep: 2 blocks (book: 100)")
    assert "1 epoch" in curves["title"] and "seed 5" in curves["title"]


def test_the_compare_title_leaves_out_resdeep_at_the_book_size():
    from ptm_func.reports.compare import describe_comparison, plan_comparison

    _, plans = plan_comparison(["net", "resdeep"], epochs=3)
    assert (
        describe_comparison(plans, "bundled:cifar2")
        == "chapter-8 comparison: 3 epochs, bundled:cifar2, seed 123"
    )


def test_conv_chart_shows_the_input_once_and_names_the_image(image_folder, tmp_path, figures):
    result = invoke("show", "conv", "--index", "3", "--data", image_folder, "--out", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    (chart,) = figures
    assert "training image 3 (airplane)" in chart["title"]
    inputs = [p for p in chart["panels"] if p[0].startswith("input")]
    assert len(inputs) == 1 and sum(images for *_, images in chart["panels"]) == 6
    invoke("show", "conv", image_folder / "test" / "cat" / "0001.png", "--out", tmp_path / "d.png")
    assert "0001.png" in figures[1]["title"]


def sweep_rows(seeds: int) -> list[dict]:
    std = 0.01 if seeds > 1 else 0.0
    return [
        {"lr": lr, "seeds": seeds, "diverged": 0, "val_mean": 0.7 + lr, "val_std": std}
        | {"train_mean": 0.8 + lr, "train_std": std}
        for lr in (0.01, 0.03)
    ]


def test_a_one_value_sweep_chart_says_what_it_draws_and_claims_std_only_over_seeds(tmp_path, figures):
    plot.sweep_chart(sweep_rows(1), ["lr"], tmp_path / "one.png", "sweep of net", epochs=10)
    plot.sweep_chart(sweep_rows(2), ["lr"], tmp_path / "two.png", "sweep of net", epochs=10)
    one, two = (" ".join(f["panels"][0][0].split()) for f in figures)
    assert one == "sweep of net, 10 epochs train and val accuracy (eval mode), one seed"
    assert two == "sweep of net, 10 epochs train and val accuracy (eval mode), mean +/- std over 2 seeds"
    assert "std" not in " ".join(map(str, figures[0]["panels"]))
    plot.sweep_chart(sweep_rows(1), [], tmp_path / "bars.png", "sweep of net", epochs=1)
    assert "1 epoch" in figures[2]["panels"][0][0] and "std" not in str(figures[2]["panels"])


def test_ptm_sweep_titles_its_chart_with_the_epochs(image_folder, tmp_path, figures):
    args = ["sweep", "net", "--lr", "0.01,0.02", "--epochs", "1", "--batch-size", "16", "--device", "cpu"]
    result = invoke(*args, "--data", image_folder, "--classes", "airplane,bird", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    (chart,) = figures
    assert chart["panels"][0][0] == "sweep of net, 1 epoch\ntrain and val accuracy (eval mode), one seed"


def test_learning_curves_say_the_epochs_and_that_the_loss_is_the_training_loss(tmp_path, figures):
    full = record(tmp_path / "full.metrics.jsonl", list(range(1, 11)))
    part = record(tmp_path / "part.metrics.jsonl", [1, 2, 3])
    assert invoke("plot", full, "--out", tmp_path / "a.png").exit_code == 0
    assert invoke("plot", full, part, "--out", tmp_path / "b.png").exit_code == 0
    assert figures[0]["title"] == "learning curves, 10 epochs: full"
    assert figures[1]["title"] == "learning curves: full (10 epochs), part (3 of 10 epochs)"
    loss_panel = figures[0]["panels"][1]
    assert loss_panel[0].startswith("training loss") and loss_panel[1].startswith("training loss")
