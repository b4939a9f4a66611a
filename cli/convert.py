"""`ptm convert`: the book's .pt state_dicts <-> ptm_func .safetensors checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from .errors import UsageError, friendly_errors
from .options import MODEL_HELP, ModelArgs, NBlocks, NChans1, Tied, model_args


def convert(
    src: Path = typer.Argument(
        ...,
        help="Input: a .pt state_dict (torch.save), a ptm_func .safetensors checkpoint, or a plain "
        "state_dict .safetensors (safetensors.torch.save_file) to import.",
    ),
    dst: Path = typer.Argument(
        ..., help="Output: .safetensors for a .pt input, .pt for a .safetensors input."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help=MODEL_HELP + " Not needed for a .pt that ptm wrote; otherwise read off the keys and "
        "shapes where they fit one model (where they fit several, the error lists them). Your own "
        "model: FILE.py:ATTR or package.module:ATTR.",
    ),
    n_chans1: int | None = NChans1,
    n_blocks: int | None = NBlocks,
    tied: bool | None = Tied,
    model_arg: list[str] | None = ModelArgs,
):
    """Convert a book .pt file to a ptm_func checkpoint, or back.

    Example: ptm convert birds_vs_airplanes.pt net.safetensors --model net

    Example: ptm convert net.pt net.safetensors   (a .pt that ptm wrote)

    Example: ptm convert runs/Net-seed123.safetensors net.pt --model my_nets.py:Net   (your own)
    """
    from ptm_func.files.convert import pt_to_safetensors, safetensors_to_pt
    from ptm_func.nets.references import use_model

    with friendly_errors():
        model = None if model is None else use_model(model)
        kinds = (src.suffix.lower(), dst.suffix.lower())
        if kinds in ((".pt", ".safetensors"), (".pth", ".safetensors"), (".safetensors", ".safetensors")):
            given = {"n_chans1": n_chans1, "n_blocks": n_blocks, "tied": tied}
            options = {**{k: v for k, v in given.items() if v is not None}, **model_args(model_arg)}
            converted = pt_to_safetensors(src, dst, model, **options)
        elif kinds in ((".safetensors", ".pt"), (".safetensors", ".pth")):
            converted = safetensors_to_pt(src, dst, model)
        else:
            raise UsageError(
                "convert goes .pt -> .safetensors, .safetensors -> .pt, or a plain state_dict "
                ".safetensors -> a ptm_func .safetensors, "
                f"not {kinds[0] or src} -> {kinds[1] or dst}"
            )
    typer.echo(f"{src} -> {dst} ({converted.name}, {converted.config})")
