"""`ptm compare`: the book's comparison of the chapter-8 variants, as a table, JSON and chart."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import typer

from ptm_func.catalog import TRAINABLE_NAMES
from ptm_func.text import printable

from .errors import UsageError, friendly_errors
from .options import (
    YOUR_MODEL,
    Augment,
    Classes,
    DataSource,
    Device,
    ModelArgs,
    Track,
    model_args,
    note,
    parse_augment,
    parse_classes,
)
from .progress import TrainingProgress


def compare(
    models: list[str] | None = typer.Argument(
        None, help=f"Variants to train (default: all of {', '.join(TRAINABLE_NAMES)}); {YOUR_MODEL}."
    ),
    data: str | None = DataSource,
    classes: str | None = Classes,
    epochs: int | None = typer.Option(None, help="Epochs for every variant (book: 100)."),
    seed: int | None = typer.Option(None, help="The one seed all variants share (book: 123)."),
    resdeep_blocks: int | None = typer.Option(None, help="resdeep's n_blocks (book: 100)."),
    device: str = Device,
    book_quirks: bool = typer.Option(
        False, "--book-quirks", help="Unshuffled training, validation in train mode."
    ),
    augment: str | None = Augment,
    model_arg: list[str] | None = ModelArgs,
    track: str | None = Track,
    json_out: Path = typer.Option(
        Path("runs/compare.json"),
        "--json-out",
        help="Where the table goes as JSON (a .json file; NAME.lock beside it while it runs).",
    ),
    chart: Path = typer.Option(
        Path("runs/compare.png"),
        "--chart",
        help="Where the bar chart goes (needs matplotlib); learning curves go beside it (NAME-curves.png).",
    ),
    tuned: bool = typer.Option(
        False,
        "--tuned",
        help="Tune each variant first (same budget each), then train --seeds seeds of its best.",
    ),
    trials: int = typer.Option(12, help="--tuned: trials per variant's study."),
    tune_epochs: int = typer.Option(5, help="--tuned: epochs per trial."),
    seeds: int = typer.Option(3, help="--tuned: seeds of each variant's best settings (--epochs each)."),
):
    """Train the book's variants on one seed and data; table and chart.

    Writes the table as JSON (with every variant's per-epoch history), the book's bar chart of
    train vs val accuracy, and every variant's learning curves.

    Example: ptm compare net width l2 --epochs 20

    Example: ptm compare net examples/kernels.py:KernelNet --model-arg kernel=(5,5) --epochs 20

    Example: ptm compare --tuned --trials 12 --tune-epochs 5 --seeds 3 --epochs 10   (fair: each tuned;
    runs/compare-tuned, continued when run again)
    """
    if tuned:
        not_taken = {"--classes": classes, "--seed": seed, "--resdeep-blocks": resdeep_blocks,
                     "--book-quirks": book_quirks or None, "--augment": augment,
                     "--model-arg": model_arg, "--track": track,
                     "--chart": None if chart == Path("runs/compare.png") else chart,
                     "--json-out": None if json_out == Path("runs/compare.json") else json_out}  # fmt: skip
        return _compare_tuned(models, trials, tune_epochs, seeds, epochs, data, device, not_taken)
    with contextlib.ExitStack() as held, friendly_errors():
        from ptm_func.data.sources import load_dataset
        from ptm_func.files.ownership import owned
        from ptm_func.files.tracking import open_tracking
        from ptm_func.reports.compare import check_outputs, plan_comparison
        from ptm_func.training.devices import resolve_device

        overrides, plans = plan_comparison(
            list(models or TRAINABLE_NAMES), epochs, seed, resdeep_blocks, book_quirks,
            parse_augment(augment), model_args(model_arg),
        )  # fmt: skip
        tracking = open_tracking(track, note)  # TensorBoard: runs/compare.tb/VARIANT beside the JSON
        curves = _checked_outputs(json_out, chart)
        # one comparison at a time writes this table and its events (runs/compare.lock)
        held.enter_context(owned(json_out, option="--json-out"))
        dev = resolve_device(device)
        dataset = load_dataset(data, parse_classes(classes), dev, notify=note)
        check_outputs(plans, len(dataset.classes))
        rows, interrupted = _train_all(plans, dataset, tracking, json_out.with_suffix(".tb"))
        failed = _report(rows, dataset, overrides, plans, json_out, chart, curves)
    if interrupted:
        typer.echo(f"ptm: interrupted; the table holds the {len(rows)} variants that finished", err=True)
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


def _checked_outputs(json_out: Path, chart: Path) -> Path:
    """Refuse output names of the wrong kind or places that cannot be written; the curves' path."""
    from ptm_func.files.atomic import check_writable

    curves = chart.with_name(f"{chart.stem}-curves.png")
    if chart.suffix != ".png":
        raise UsageError(f"--chart must name a .png file, got {chart}")
    for path in (json_out, chart, curves):
        check_writable(path, 1 << 20)
    if json_out.suffix != ".json":
        raise UsageError(f"--json-out must name a .json file, got {json_out}")
    return curves


def _compare_tuned(models, trials, tune_epochs, seeds, epochs, data, device, not_taken) -> None:
    """`ptm compare --tuned`: tune each variant, then train seeds of its best (compare_tuned)."""
    from .compare_tuned import tuned_comparison

    with friendly_errors():
        tuned_comparison(
            list(models or TRAINABLE_NAMES), trials=trials, tune_epochs=tune_epochs, seeds=seeds,
            epochs=epochs, data=data, device=device, not_taken=not_taken,
        )  # fmt: skip


def _train_all(plans, dataset, tracking, tracking_dir: Path) -> tuple[list, bool]:
    """Train the variants in turn; Ctrl-C keeps the rows that finished."""
    from rich.console import Console

    from ptm_func.files.tracking import KILLED
    from ptm_func.reports.compare import compare as run_comparison

    console = Console(stderr=True)
    rows = []
    if tracking:
        typer.echo(tracking.describe(f"{tracking_dir}/VARIANT", logdir=tracking_dir), err=True)
    group = tracking.group(
        "compare", {"models": [name for name, _ in plans], "data": dataset.source}, tracking_dir
    )
    try:
        for name, options in plans:
            progress = TrainingProgress()
            console.print(f"[bold]{name}[/bold] ...", highlight=False)
            with progress.running(options.get("epochs", 100)):
                rows += run_comparison(
                    [name],
                    dataset,
                    options,
                    on_epoch=lambda s, ts, progress=progress: progress.epoch(s),
                    on_step=progress.step,
                    tracking=group,
                    tracking_dir=tracking_dir,
                )
    except KeyboardInterrupt:
        group.finish(KILLED)
        return rows, True
    group.finish()
    return rows, False


def _report(rows, dataset, overrides, plans, json_out: Path, chart: Path, curves: Path) -> bool:
    """Print the table, then write JSON, chart and curves; a failed write says so. True if any failed."""
    from rich.console import Console
    from rich.table import Table

    from ptm_func.errors import PlotUnavailable
    from ptm_func.files import jsonio
    from ptm_func.reports.compare import describe_comparison
    from ptm_func.reports.plot import comparison_chart, learning_curves_grid

    described = describe_comparison(plans, printable(dataset.source))
    table = Table(title=described)
    for column in ("variant", "book class", "params", "train acc", "val acc", "seconds"):
        table.add_column(column, justify="left" if column in ("variant", "book class") else "right")
    for r in rows:
        accuracies = (
            (f"{r.train_accuracy:.4f}", f"{r.val_accuracy:.4f}")
            if r.diverged_in is None
            else ("diverged", f"(epoch {r.diverged_in})")
        )
        table.add_row(r.variant, r.book_class, f"{r.params:,}", *accuracies, f"{r.seconds:.1f}")
    Console().print(table)
    failed = False
    content = jsonio.dumps(
        {"data": dataset.source, "settings": overrides, "rows": [asdict(r) for r in rows]}, indent=2
    )
    try:
        json_out.write_text(content)
        typer.echo(f"table as JSON: {json_out}")
    except OSError as err:
        failed = True
        rescue = Path(tempfile.gettempdir()) / f"ptm-compare-{os.getpid()}.json"
        try:
            rescue.write_text(content)
            kept = f"the JSON is in {rescue}"
        except OSError:
            kept = "the table above is all that is kept"
        typer.echo(f"ptm: error: cannot write {json_out} ({err.strerror}); {kept}", err=True)
    finished = [r for r in rows if r.diverged_in is None]
    try:
        if finished:
            typer.echo(f"chart: {comparison_chart(finished, chart, described)}")
            drawn = learning_curves_grid(
                [(r.variant, r.history) for r in rows], curves, title=f"{described}\nlearning curves"
            )
            typer.echo(f"learning curves: {drawn}")
    except PlotUnavailable as err:
        typer.echo(f"no chart: {err}", err=True)
    except (OSError, ValueError) as err:
        typer.echo(f"ptm: error: cannot draw the charts: {printable(err)}", err=True)
        failed = True
    return failed
