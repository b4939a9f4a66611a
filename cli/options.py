"""Options shared by several commands."""

from __future__ import annotations

import typer

from ptm_func.catalog import MODEL_NAMES

MODEL_HELP = f"Model name: {', '.join(MODEL_NAMES)}."

NChans1 = typer.Option(None, "--n-chans1", help="Channels of the first conv (book: 32; net is fixed at 16).")
NBlocks = typer.Option(None, "--n-blocks", help="resdeep: number of residual blocks (book: 100).")
Tied = typer.Option(
    None,
    "--tied/--untied",
    help="resdeep: --tied reproduces the book's one shared block; default --untied (dlwpt-code #89).",
)


DataSource = typer.Option(
    None,
    "--data",
    "--data-dir",
    help="Where the images come from. auto (default): CIFAR-10 from $PTM_DATA_DIR (default "
    "~/.cache/ptm_func), else downloaded there, else, offline, the CIFAR-2 bundled with ptm; "
    "bundled: that CIFAR-2 (airplane, bird; JPEG re-encodings); cifar10: CIFAR-10's original pixels "
    "(downloaded if missing); or a folder: an ImageFolder root (train/<class>/*.jpg and test/ or val/) "
    "or one holding cifar-10-batches-py.",
)
Classes = typer.Option(
    None,
    "--classes",
    help="Two comma-separated classes, in label order (the nets have 2 outputs). Default: airplane,bird "
    "for CIFAR; a folder's two class folders.",
)
Device = typer.Option("auto", "--device", help="auto (cuda when present), cpu or cuda.")


def whole_first_paragraph(command) -> str:
    """A command's summary (its docstring's first paragraph) for the command list of --help,
    which would otherwise cut it at about 65 characters, mid-sentence."""
    return " ".join((command.__doc__ or "").strip().split("\n\n")[0].split())


def parse_classes(classes: str | None) -> list[str] | None:
    return [c.strip() for c in classes.split(",") if c.strip()] if classes else None


def note(message: str) -> None:
    """One line on stderr for something the user should know (not an error)."""
    typer.echo(f"ptm: note: {message}", err=True)


def build_model(name: str, n_chans1: int | None, n_blocks: int | None, tied: bool | None):
    """Look up `name` with only the options the user actually gave."""
    from ptm_func.nets.registry import get_model

    return get_model(name, **optional(n_chans1=n_chans1, n_blocks=n_blocks, tied=tied))


def optional(**given):
    """The options the user gave (None: not given, the library's default applies)."""
    return {k: v for k, v in given.items() if v is not None}


def as_json_option(help: str):
    return typer.Option(False, "--json", help=help)
