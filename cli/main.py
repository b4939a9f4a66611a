"""`ptm`: train, inspect and convert the chapter-8 networks of Deep Learning with PyTorch."""

from __future__ import annotations

import logging

import typer

from .check_cmd import check_command
from .compare_cmd import compare
from .convert import convert
from .errors import DEBUG
from .inspect_cmds import info, predict
from .options import whole_first_paragraph
from .plot_cmd import plot
from .show import show_app
from .sweep_cmd import sweep_command
from .training import evaluate_checkpoint, train
from .tune_cmd import tune_command

app = typer.Typer(
    help=(
        "Functional PyTorch for the chapter-8 CNNs (CIFAR-2: airplanes vs birds).\n\n"
        "Example: ptm train net --epochs 20   (CIFAR-10 if cached or downloadable, else bundled CIFAR-2)\n\n"
        "Example: ptm plot runs/net-seed123.safetensors   (its learning curves)\n\n"
        "Example: ptm info net\n\n"
        "Example: ptm check net   (do the compiled steps agree with eager on this machine?)"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's renderer alone took longer than the 0.5 s budget
    add_completion=False,
)


def show_version(asked: bool) -> None:
    if asked:
        from ptm_func.version import version

        typer.echo(f"ptm_func {version()}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="Print ptm_func's version and exit."
    ),
):
    """Functional PyTorch for the chapter-8 CNNs (CIFAR-2: airplanes vs birds)."""
    DEBUG["enabled"] = debug
    # torch's CUDA build on a machine without CUDA warns at every CPU compile; nothing to act on
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


# short_help: the command list would cut a summary longer than ~65 characters mid-sentence
for name, command in [
    ("train", train),
    ("eval", evaluate_checkpoint),
    ("convert", convert),
    ("info", info),
    ("predict", predict),
    ("compare", compare),
    ("plot", plot),
    ("sweep", sweep_command),
    ("tune", tune_command),
    ("check", check_command),
]:
    app.command(name, short_help=whole_first_paragraph(command))(command)
app.add_typer(show_app, name="show")


if __name__ == "__main__":  # python -m cli.main, where ptm is not installed (benchmarks/gpu_run.sh)
    app()
