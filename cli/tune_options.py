"""The options of `ptm tune`, declared once (the command's signature stays one line each)."""

from __future__ import annotations

import typer

from ptm_func.catalog import TRAINABLE_NAMES

from .options import YOUR_MODEL

Model = typer.Argument(None, help=f"One of: {', '.join(TRAINABLE_NAMES)}; {YOUR_MODEL}.")
RANGE = "LOW:HIGH (uniform), LOW:HIGH:log, a comma list (a choice) or one value (fixed)"
Lr = typer.Option(None, help=f"Learning rate to search: {RANGE}. E.g. 1e-3:1e-1:log.")
Momentum = typer.Option(None, help="SGD momentum, e.g. 0:0.95.")
Dampening = typer.Option(None, help="SGD dampening (with momentum), e.g. 0:0.5.")
WeightDecay = typer.Option(None, help="SGD weight decay, e.g. 0:1e-2 or 1e-5:1e-2:log.")
L2 = typer.Option(None, "--l2", help="The book's L2 penalty lambda, e.g. 0:1e-2.")
L1 = typer.Option(None, "--l1", help="L1 penalty lambda, e.g. 0:1e-4.")
SeedChoices = typer.Option(None, help="Training seeds to choose from, e.g. 1,2,3 (default: the book's 123).")
NChans1 = typer.Option(
    None, "--n-chans1", help="Channels of the first conv layer, e.g. 16,32,64 (trials are grouped by shape)."
)
NBlocks = typer.Option(None, "--n-blocks", help="resdeep: residual blocks, e.g. 10,20.")
Trials = typer.Option(20, help="The study's budget: complete + pruned trials, shared by all its workers.")
Epochs = typer.Option(10, help="Epochs per trial: the pruner's resource.")
Batch = typer.Option(
    None, help="Trials trained at once as members of one step (default 8 on CUDA, 4 on CPU, where they loop)."
)
BatchSize = typer.Option(None, "--batch-size", help="Images per step (book: 64).")
Sampler = typer.Option(
    "tpe", help="tpe, random, cmaes (pip install cmaes), qmc (scipy) or grid (lists only)."
)
Pruner = typer.Option(
    "halving", help="halving (successive halving), hyperband, median or none; epochs are the resource."
)
MinEpochs = typer.Option(1, help="Epochs every trial trains before it may be pruned (the pruner's minimum).")
Seed = typer.Option(0, help="The sampler's seed: the same study from scratch samples the same trials.")
Storage = typer.Option(
    None,
    help="Where the study lives: a journal file (default runs/studies.journal; several processes on "
    "one machine) or a database URL, e.g. postgresql://user:pass@host/db (several machines).",
)
Study = typer.Option(None, help="The study's name (default: MODEL). The same command again continues it.")
Out = typer.Option(None, help="Folder of the trials' checkpoints and records (default runs/tune-STUDY).")
Show = typer.Option(None, help="Print study STUDY from the storage (trials by state, the best) and exit.")
Compile = typer.Option(None, "--compile/--no-compile", help="torch.compile the step (as ptm train).")
Vmap = typer.Option(
    None, "--vmap/--no-vmap", help="One vmapped step for a batch of trials, or the step trial after trial."
)
Pbt = typer.Option(
    False,
    "--pbt",
    help="Population-based training in one run instead of a study: see --population, --interval.",
)
Population = typer.Option(8, help="--pbt: members trained together.")
Interval = typer.Option(
    4, help="--pbt: epochs between exploit steps (the bottom copies the top, then perturbs)."
)
Quantile = typer.Option(
    0.25, help="--pbt: the fraction at the bottom that copies from the same fraction at the top."
)
Resample = typer.Option(0.25, help="--pbt: the chance a hyperparameter is drawn again instead of scaled.")
Perturb = typer.Option("0.8,1.2", help="--pbt: the two factors a copied hyperparameter is scaled by.")
Resume = typer.Option(None, help="--pbt: continue the run saved in this folder, bit for bit.")
