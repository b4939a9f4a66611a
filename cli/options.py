"""Options shared by several commands."""

from __future__ import annotations

import typer

from ptm_func import MODEL_NAMES, Model, get_model

MODEL_HELP = f"Model name: {', '.join(MODEL_NAMES)}."

NChans1 = typer.Option(None, "--n-chans1", help="Channels of the first conv (book: 32; net is fixed at 16).")
NBlocks = typer.Option(None, "--n-blocks", help="resdeep: number of residual blocks (book: 100).")
Tied = typer.Option(
    None,
    "--tied/--untied",
    help="resdeep: --tied reproduces the book's one shared block; default --untied (dlwpt-code #89).",
)


def build_model(name: str, n_chans1: int | None, n_blocks: int | None, tied: bool | None) -> Model:
    """Look up `name` with only the options the user actually gave."""
    given = {"n_chans1": n_chans1, "n_blocks": n_blocks, "tied": tied}
    return get_model(name, **{k: v for k, v in given.items() if v is not None})
