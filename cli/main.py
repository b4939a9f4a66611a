"""`ptm`: train, inspect and convert the chapter-8 networks of Deep Learning with PyTorch."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ptm_func.summary import parameter_summary

from .errors import DEBUG, UsageError, friendly_errors
from .options import MODEL_HELP, NBlocks, NChans1, Tied, build_model
from .convert import convert
from .training import evaluate_checkpoint, train

app = typer.Typer(
    help=(
        "Functional PyTorch for the chapter-8 CNNs (CIFAR-2: airplanes vs birds).\n\n"
        "Example: ptm info net"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors.")):
    """Functional PyTorch for the chapter-8 CNNs (CIFAR-2: airplanes vs birds)."""
    DEBUG["enabled"] = debug


app.command()(train)
app.command("eval")(evaluate_checkpoint)
app.command()(convert)


@app.command()
def info(
    model: str = typer.Argument(..., help=MODEL_HELP),
    n_chans1: Optional[int] = NChans1,
    n_blocks: Optional[int] = NBlocks,
    tied: Optional[bool] = Tied,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
):
    """Show a model's parameter tensors, their shapes and counts, and the total.

    Example: ptm info resdeep --n-blocks 10 --tied
    """
    with friendly_errors():
        for flag, value in (("--n-chans1", n_chans1), ("--n-blocks", n_blocks)):
            if value is not None and value < 1:
                raise UsageError(f"{flag} must be a positive integer, got {value}")
        summary = parameter_summary(build_model(model, n_chans1, n_blocks, tied))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{summary['model']} ({summary['book_class']}, {summary['config']})")
    table.add_column("tensor")
    table.add_column("shape")
    table.add_column("numel", justify="right")
    for t in summary["tensors"]:
        table.add_row(t["key"], "x".join(map(str, t["shape"])), f"{t['numel']:,}")
    console = Console()
    console.print(table)
    console.print(f"total parameters: {summary['total']:,}")
    console.print(f"numel_list: {summary['numel_list']}", soft_wrap=True)
    if summary["tied_keys"]:
        console.print(f"{summary['tied_keys']} more state_dict keys alias the shared block (tied)")
