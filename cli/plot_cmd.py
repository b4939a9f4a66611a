"""`ptm plot`: learning curves of one or more runs from their records."""

from __future__ import annotations

from pathlib import Path

import typer

from ptm_func.errors import RecordError

from .errors import UsageError, friendly_errors


def plot(
    runs: list[Path] = typer.Argument(
        ...,
        help="Runs to draw: checkpoints (runs/net-seed123.safetensors) or their records "
        "(runs/net-seed123.metrics.jsonl).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="PNG to write (default: beside the first run, NAME.curves.png)."
    ),
    title: str | None = typer.Option(None, help="Title above the plots (default: the runs' names)."),
):
    """Draw learning curves: train and val accuracy, and loss, per epoch, for each run.

    Train accuracy is the running one, measured while training; val accuracy is measured in eval mode.

    Where val accuracy stops following train accuracy, the model starts to over-fit.

    An ensemble (--replicas) is drawn as each member's curve and their mean.

    Example: ptm plot runs/net-seed123.safetensors

    Example: ptm plot runs/net-seed123.safetensors runs/res-seed123.safetensors --out curves.png
    """
    from ptm_func.files.records import METRICS_SUFFIX, find_metrics, read_metrics
    from ptm_func.reports.plot import PlotUnavailable, learning_curves

    with friendly_errors():
        if out is not None and out.suffix != ".png":
            raise UsageError(f"--out must name a .png file, got {out}")
        curves = []
        for run in runs:
            path = find_metrics(run)
            lines = read_metrics(path)
            if not lines:
                raise RecordError(f"{path} has no finished epoch yet")
            curves.append((path.name.removesuffix(METRICS_SUFFIX), lines))
        if out is None:
            first = find_metrics(runs[0])
            out = first.with_name(first.name.removesuffix(METRICS_SUFFIX) + ".curves.png")
        try:
            path = learning_curves(curves, out, title)
        except PlotUnavailable as err:
            raise RuntimeError(str(err)) from None
    typer.echo(f"learning curves: {path}")
