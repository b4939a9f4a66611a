"""The options of `ptm train`, declared once (the command's signature stays one line each)."""

from __future__ import annotations

import typer

from ptm_func.catalog import TRAINABLE_NAMES

from .options import YOUR_MODEL

Model = typer.Argument(
    ..., help=f"One of: {', '.join(TRAINABLE_NAMES)} (l2 is Net with the L2 penalty); {YOUR_MODEL}."
)

Epochs = typer.Option(None, help="Epochs (book: 100). With --resume: the new total.")
EvalEvery = typer.Option(
    None,
    help="Measure val accuracy every N epochs (default 1; 0: after the last only). "
    "The weights do not depend on it.",
)
BatchSize = typer.Option(None, help="Batch size (book: 64).")
Lr = typer.Option(None, help="Learning rate (book: 1e-2, resdeep 3e-3).")
Momentum = typer.Option(None, help="SGD momentum (book: 0).")
WeightDecay = typer.Option(None, help="SGD weight decay (book: 0).")
L2 = typer.Option(None, "--l2", help="The book's L2 penalty lambda on the loss (l2 variant: 1e-3).")
L1 = typer.Option(None, "--l1", help="L1 penalty lambda on the loss.")
Seed = typer.Option(None, help="Seed for init, shuffling and dropout (book: 123).")
Out = typer.Option(
    None,
    help="Checkpoint path, .safetensors (default runs/MODEL-seedSEED.safetensors, numbered -2, -3, ... "
    "when an earlier run has it or is writing it; --force overwrites); with --replicas, a folder.",
)
Force = typer.Option(False, "--force", help="Reuse the default checkpoint path even if a run is there.")
Resume = typer.Option(
    None,
    help="Continue the run saved at this checkpoint (or the --replicas folder), exactly where it stopped.",
)
Config = typer.Option(
    None,
    help="Settings from a file (ptm tune's best.json): its model's settings; options given here win.",
)
CheckpointEvery = typer.Option(0, help="Also save every N epochs (0: only at the end or on interruption).")
Replicas = typer.Option(
    1,
    help="Train K seeds (seed, seed+1, ...) as ptm sweep --seeds K does, into a folder (--out, default "
    "runs/sweep-MODEL); prints each, their mean +/- std and their ensemble.",
)
Nproc = typer.Option(
    1,
    "--nproc",
    help="Train on N local worker processes, data parallel (torch.distributed: gloo on CPU, NCCL "
    "with one GPU each); --batch-size stays the global batch. Under torchrun leave it out: ptm "
    "reads RANK and WORLD_SIZE.",
)
Compile = typer.Option(
    None,
    "--compile/--no-compile",
    help="torch.compile the step (default: on for CUDA; on CPU from 20 epochs, except for "
    "batchnorm and resdeep, where it does not pay).",
)
BookQuirks = typer.Option(
    False, "--book-quirks", help="Train unshuffled and validate in train mode, as the book's notebook did."
)
