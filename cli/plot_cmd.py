"""`ptm plot`: learning curves of one or more runs from their records."""

from __future__ import annotations

from pathlib import Path

import typer

from ptm_func.errors import RecordError
from ptm_func.text import names, printable

from .errors import UsageError, friendly_errors
from .options import note


def plot(
    runs: list[Path] | None = typer.Argument(
        None,
        help="Runs to draw: checkpoints (runs/net-seed123.safetensors) or their records "
        "(runs/net-seed123.metrics.jsonl).",
    ),
    study: str | None = typer.Option(
        None, help="Draw this ptm tune study instead: its history and val accuracy against each parameter."
    ),
    storage: str | None = typer.Option(
        None, help="The study's storage (default runs/studies.journal; a database URL as ptm tune took)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="PNG to write (default: beside the first run, NAME.curves.png)."
    ),
    title: str | None = typer.Option(
        None, help="Title above the plots (default: the epochs drawn and the runs' names)."
    ),
):
    """Draw learning curves (accuracy and training loss) per epoch.

    One colour per run; accuracy on the left (train and val), the training loss on the right.

    Train accuracy is the running one, measured while training; val accuracy is measured in eval mode.

    Where val accuracy stops following train accuracy, the model starts to over-fit.

    An ensemble (--replicas) is drawn as each member's curve and their mean.

    A run with no finished epoch yet is skipped with a note; a record whose epochs repeat or
    are out of order is drawn in epoch order with a warning.

    Example: ptm plot runs/net-seed123.safetensors

    Example: ptm plot runs/net-seed123.safetensors runs/res-seed123.safetensors --out curves.png

    Example: ptm plot --study net   (a ptm tune study: runs/tune-net/study.png)
    """
    from ptm_func.files.records import METRICS_SUFFIX, find_metrics, read_metrics
    from ptm_func.reports.plot import PlotUnavailable, learning_curves, tidy_epochs

    with friendly_errors():
        if out is not None and out.suffix != ".png":
            raise UsageError(f"--out must name a .png file, got {out}")
        if study is not None:
            if runs:
                raise UsageError("give runs to draw or --study, not both")
            from ptm_func.runs.study_report import plot_study

            try:
                typer.echo(f"study chart: {plot_study(study, storage, out)}")
            except PlotUnavailable as err:
                raise RuntimeError(str(err)) from None
            return
        if not runs:
            raise UsageError("give runs to draw (checkpoints or records), or --study NAME")
        curves, drawn, empty = [], [], []
        for run in runs:
            path = find_metrics(run)
            lines, problems = tidy_epochs(read_metrics(path))
            for problem in problems:
                typer.echo(f"ptm: warning: {printable(path)}: {problem}", err=True)
            if not lines:
                empty.append(path)
                continue
            curves.append((path.name.removesuffix(METRICS_SUFFIX), lines))
            drawn.append(path)
        if not curves:
            have = "has" if len(empty) == 1 else "have"
            raise RecordError(f"{names(empty)} {have} no finished epoch yet: nothing to draw")
        for path in empty:
            note(f"skipped {printable(path)}: no finished epoch yet")
        target = out or drawn[0].with_name(drawn[0].name.removesuffix(METRICS_SUFFIX) + ".curves.png")
        try:
            path = learning_curves(curves, target, title)
        except PlotUnavailable as err:
            raise RuntimeError(str(err)) from None
    typer.echo(f"learning curves: {path}")
