"""`ptm compare --tuned`: every variant tuned on the same budget, then seeds of its best; a table."""

from __future__ import annotations

import sys

import typer

from ptm_func.text import printable

from .errors import UsageError
from .progress import TrainingProgress


def tuned_comparison(models: list[str], *, trials: int, tune_epochs: int, seeds: int, epochs: int | None,
                     data: str | None, device: str, not_taken: dict[str, object]) -> None:  # fmt: skip
    """Run (or continue) the tuned comparison in runs/compare-tuned and print its table.
    `not_taken`: ptm compare's other options as given (None: not given), refused here."""
    given = [option for option, value in not_taken.items() if value]
    if given:
        raise UsageError(f"--tuned does not take {', '.join(given)} (its table: runs/compare-tuned)")
    from rich.console import Console
    from rich.table import Table

    from ptm_func.runs.tuned_compare import run_tuned_comparison

    epochs = 10 if epochs is None else epochs
    rows = run_tuned_comparison(
        models, trials=trials, tune_epochs=tune_epochs, seeds=seeds, epochs=epochs, data=data,
        device=device, reporter=TrainingProgress(),
    )  # fmt: skip
    title = (
        f"tuned comparison: {trials} trials x {tune_epochs} epochs per variant (lr, momentum, weight "
        f"decay; successive halving), then {seeds} seeds x {epochs} epochs of the best"
    )
    table = Table(title=title)
    for column in ("variant", "best lr", "mom", "wd", "trials", "val mean +/- std", "95% interval", "book",
                   "vs net [95%]", "beyond noise"):  # fmt: skip
        table.add_column(column, justify="left" if column == "variant" else "right")
    for r in rows:
        trials_text = f"{r.trials.get('complete', 0)}+{r.trials.get('pruned', 0)}p"
        diff = "-" if r.vs_net is None else f"{r.vs_net[0]:+.4f} [{r.vs_net[1]:+.4f}, {r.vs_net[2]:+.4f}]"
        table.add_row(
            r.variant, f"{r.best['lr']:.3g}", f"{r.best['momentum']:.2f}", f"{r.best['weight_decay']:.2g}",
            trials_text, f"{r.mean:.4f} +/- {r.std:.4f}", f"[{r.ci95[0]:.4f}, {r.ci95[1]:.4f}]",
            "-" if r.book_val is None else f"{r.book_val:.2f}", diff,
            "-" if r.beyond_noise is None else ("yes" if r.beyond_noise else "no"),
        )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 170).print(table)  # a file or pipe: full width
    typer.echo(f"table as JSON: {printable('runs/compare-tuned/compare-tuned.json')}")
