"""The options of `ptm sweep`, declared once (the command's signature stays one line each)."""

from __future__ import annotations

import typer

from ptm_func.catalog import TRAINABLE_NAMES

from .options import YOUR_MODEL

Model = typer.Argument(
    None,
    help=f"One of: {', '.join(TRAINABLE_NAMES)}; {YOUR_MODEL}. "
    "With --resume: only your own model, given again.",
)
Lr = typer.Option(
    None,
    help="Learning rates to sweep, comma-separated: every list option works so (one value fixes it). "
    "E.g. 0.003,0.01,0.03.",
)
Momentum = typer.Option(None, help="SGD momentum values, e.g. 0,0.9.")
Dampening = typer.Option(None, help="SGD dampening values (with momentum), e.g. 0,0.5.")
WeightDecay = typer.Option(None, help="SGD weight decay values, e.g. 0,5e-4.")
L2 = typer.Option(None, "--l2", help="The book's L2 penalty lambdas, e.g. 0,1e-3.")
L1 = typer.Option(None, "--l1", help="L1 penalty lambdas, e.g. 0,1e-4.")
Seeds = typer.Option(1, help="Seeds per grid point: --seed, --seed + 1, ... (mean +/- std over them).")
Seed = typer.Option(123, help="The first seed.")
Epochs = typer.Option(None, help="Epochs for every member (book: 100).")
BatchSize = typer.Option(None, help="Batch size (book: 64).")
EvalEvery = typer.Option(None, help="Val accuracy every N epochs (default 1; 0: last only).")
Chunk = typer.Option(64, help="Train at most K members at once (memory); the grid runs chunk by chunk.")
Nproc = typer.Option(
    1, "--nproc", help="Split the members over N local worker processes (each its own device on GPUs)."
)
Out = typer.Option(None, help="Sweep folder (default runs/sweep-MODEL, numbered if taken).")
Resume = typer.Option(None, help="Continue the sweep in this folder where it stopped.")
CheckpointEvery = typer.Option(0, help="Also save every N epochs (0: at the end and on interruption).")
Compile = typer.Option(
    None,
    "--compile/--no-compile",
    help="torch.compile the step (default: CUDA; CPU from 20 epochs, not for batchnorm and resdeep).",
)
Vmap = typer.Option(
    None,
    "--vmap/--no-vmap",
    help="One vmapped step for all members of a chunk, or the single step member after member "
    "(default: vmap on CUDA; on CPU the loop, where vmap's batched conv costs ~2x).",
)
