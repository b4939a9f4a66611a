"""`ptm compare`: the book's comparison of the chapter-8 variants, as a table, JSON and chart."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ptm_func.compare import compare as run_comparison
from ptm_func.data import load_dataset
from ptm_func.devices import resolve_device
from ptm_func.plot import PlotUnavailable, comparison_chart, learning_curves_grid
from ptm_func.train import TRAINABLE_NAMES

from .errors import UsageError, friendly_errors
from .options import Classes, DataSource, Device, note, parse_classes
from .progress import TrainingProgress


def compare(
    models: list[str] | None = typer.Argument(
        None, help=f"Variants to train (default: all of {', '.join(TRAINABLE_NAMES)})."
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
    json_out: Path = typer.Option(
        Path("runs/compare.json"), "--json-out", help="Where the table goes as JSON."
    ),
    chart: Path = typer.Option(
        Path("runs/compare.png"),
        "--chart",
        help="Where the bar chart goes (needs matplotlib); learning curves go beside it (NAME-curves.png).",
    ),
):
    """Train the book's variants with one seed and data; print the comparison, chart it.

    Writes the table as JSON (with every variant's per-epoch history), the book's bar chart of
    train vs val accuracy, and every variant's learning curves.

    Example: ptm compare net width l2 --epochs 20
    """
    with friendly_errors():
        names = list(models or TRAINABLE_NAMES)
        unknown = [n for n in names if n not in TRAINABLE_NAMES]
        if unknown:
            raise UsageError(f"unknown model {unknown[0]!r}; choose from: {', '.join(TRAINABLE_NAMES)}")
        if epochs is not None and epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {epochs}")
        overrides = {k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None}
        if book_quirks:
            overrides.update(shuffle=False, eval_train_mode=True)
        dev = resolve_device(device)
        data = load_dataset(data, parse_classes(classes), dev, notify=note)
        console = Console(stderr=True)
        rows = []
        for name in names:
            options = dict(overrides)
            if name == "resdeep" and resdeep_blocks is not None:
                options["n_blocks"] = resdeep_blocks
            progress = TrainingProgress(options.get("epochs", 100))
            console.print(f"[bold]{name}[/bold] ...", highlight=False)
            with progress.running():
                rows += run_comparison(
                    [name],
                    data,
                    options,
                    on_epoch=lambda s, ts, progress=progress: progress.on_epoch(s),
                    on_step=progress.on_step,
                )
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(
                {"data": data.source, "settings": overrides, "rows": [asdict(r) for r in rows]}, indent=2
            )
        )
    table = Table(title=f"chapter-8 comparison ({data.source}, seed {overrides.get('seed', 123)})")
    for column in ("variant", "book class", "params", "train acc", "val acc", "seconds"):
        table.add_column(column, justify="left" if column in ("variant", "book class") else "right")
    for r in rows:
        table.add_row(
            r.variant,
            r.book_class,
            f"{r.params:,}",
            f"{r.train_accuracy:.4f}",
            f"{r.val_accuracy:.4f}",
            f"{r.seconds:.1f}",
        )
    Console().print(table)
    typer.echo(f"table as JSON: {json_out}")
    try:
        typer.echo(f"chart: {comparison_chart(rows, chart)}")
        curves = chart.with_name(f"{chart.stem}-curves.png")
        drawn = learning_curves_grid(
            [(r.variant, r.history) for r in rows], curves, title=f"learning curves ({data.source})"
        )
        typer.echo(f"learning curves: {drawn}")
    except PlotUnavailable as err:
        typer.echo(f"no chart: {err}", err=True)
