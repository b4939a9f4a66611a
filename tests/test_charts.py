"""What `ptm plot`, compare, sweep and show draw: runs without epochs skipped, epochs in order,
titles that say the epochs, data, seed and what is averaged."""

import json
from pathlib import Path

import pytest

import ptm_func.reports.plot as plot
from tests.cli_helpers import invoke, one_error_line


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
