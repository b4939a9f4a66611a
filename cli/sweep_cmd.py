"""`ptm sweep`: a hyperparameter grid trained as members of one run; a table, JSON and a chart."""

from __future__ import annotations

from pathlib import Path

import typer

from ptm_func.files import jsonio
from ptm_func.text import printable

from . import sweep_options
from .errors import UsageError, friendly_errors
from .launch import run_as_worker, run_workers, world_or_launch
from .options import (
    Augment,
    ChannelsLast,
    Classes,
    DataSource,
    Device,
    ModelArgs,
    NBlocks,
    NChans1,
    Tied,
    Track,
    as_json_option,
    model_args,
    optional,
    parse_augment,
    parse_classes,
)
from .progress import TrainingProgress

# option -> the TrainConfig field it sweeps
GRID_OPTIONS = {
    "--lr": "lr",
    "--momentum": "momentum",
    "--dampening": "dampening",
    "--weight-decay": "weight_decay",
    "--l2": "l2_lambda",
    "--l1": "l1_lambda",
}


def parse_values(option: str, text: str | None) -> list[float] | None:
    """'0.003,0.01' -> [0.003, 0.01]; UsageError for anything else."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"{option} takes comma-separated numbers, got {text!r}")
    return values


def sweep_command(
    model: str = sweep_options.Model,
    lr: str | None = sweep_options.Lr,
    momentum: str | None = sweep_options.Momentum,
    dampening: str | None = sweep_options.Dampening,
    weight_decay: str | None = sweep_options.WeightDecay,
    l2: str | None = sweep_options.L2,
    l1: str | None = sweep_options.L1,
    seeds: int = sweep_options.Seeds,
    seed: int = sweep_options.Seed,
    epochs: int | None = sweep_options.Epochs,
    batch_size: int | None = sweep_options.BatchSize,
    eval_every: int | None = sweep_options.EvalEvery,
    chunk: int = sweep_options.Chunk,
    nproc: int = sweep_options.Nproc,
    data: str | None = DataSource,
    classes: str | None = Classes,
    device: str = Device,
    out: Path | None = sweep_options.Out,
    resume: Path | None = sweep_options.Resume,
    checkpoint_every: int = sweep_options.CheckpointEvery,
    compile: bool | None = sweep_options.Compile,
    vmap: bool | None = sweep_options.Vmap,
    channels_last: bool | None = ChannelsLast,
    n_chans1: int | None = NChans1,
    n_blocks: int | None = NBlocks,
    tied: bool | None = Tied,
    model_arg: list[str] | None = ModelArgs,
    track: str | None = Track,
    augment: str | None = Augment,
    as_json: bool = as_json_option("Print every member's result as JSON on stdout."),
):
    """Sweep hyperparameters: every combination of the lists, times --seeds, trained together.

    Each member gets the checkpoint and record its own `ptm train` would write, in the sweep's
    folder; the table shows val accuracy (mean +/- std over seeds), best first; sweep.json and
    sweep.png (a line for one swept value, a heatmap for two) sit beside them.

    Ctrl-C or SIGTERM saves every member and tells you how to --resume.

    Example: ptm sweep net --lr 0.003,0.01,0.03 --weight-decay 0,0.0005 --seeds 2 --epochs 20

    Example: ptm sweep --resume runs/sweep-net

    Example: ptm sweep net --lr 0.003,0.01,0.03,0.1 --seeds 2 --nproc 2   (members split over 2 workers)

    Example: ptm sweep examples/kernels.py:KernelNet --model-arg kernel=(1,3) --seeds 3   (your own)
    """
    arguments = dict(locals())  # what --nproc's workers run again
    with friendly_errors():
        world = world_or_launch(nproc, device)
        if nproc > 1:
            workers = {**arguments, "nproc": 1, "out": _folder(arguments)}
            raise typer.Exit(run_workers(nproc, sweep_worker, workers))
        from ptm_func.runs.sweep_run import run_sweep

        texts = {"--lr": lr, "--momentum": momentum, "--dampening": dampening}
        texts.update({"--weight-decay": weight_decay, "--l2": l2, "--l1": l1})
        grid = {GRID_OPTIONS[o]: v for o, t in texts.items() if (v := parse_values(o, t)) is not None}
        settings = optional(
            epochs=epochs, batch_size=batch_size, eval_every=eval_every, compile=compile, members_vmap=vmap,
            n_chans1=n_chans1, n_blocks=n_blocks, tied=tied, augment=parse_augment(augment),
        )  # fmt: skip
        settings.update(model_args(model_arg), **optional(channels_last=channels_last))
        report = run_sweep(
            model, grid=grid, seeds=seeds, seed=seed, resume=resume, out=out, chunk=chunk, data=data,
            classes=parse_classes(classes), device=device, checkpoint_every=checkpoint_every,
            reporter=TrainingProgress(), world=world, stop_on_signals=True, track=track, **settings,
        )  # fmt: skip
    if report.interrupted:
        typer.echo(
            f"ptm: interrupted; every member of the chunk is saved in {report.folder}. "
            f"Resume with: ptm sweep {_given_again(model)}--resume {report.folder}",
            err=True,
        )
        raise typer.Exit(128 + report.signal)
    if report.main:
        with friendly_errors():
            _print_report(report, as_json)


def _given_again(model: str | None) -> str:
    """A user's model is given again on resume (ptm imports no code a file names)."""
    from ptm_func.catalog import TRAINABLE_NAMES

    return "" if model is None or model in TRAINABLE_NAMES else f"{model} "


def _folder(arguments: dict) -> Path | None:
    """The sweep's folder, chosen once before --nproc's workers start (they must share it)."""
    from ptm_func.runs.sweep import holds_files, unused_folder

    model, out, resume = arguments["model"], arguments["out"], arguments["resume"]
    if resume is not None:
        return None
    if model is None:
        raise UsageError("give a MODEL to sweep (or --resume FOLDER)")
    from ptm_func.nets.references import use_model

    folder = out or unused_folder(Path("runs") / f"sweep-{use_model(model)}")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file: a sweep writes a folder (give another --out)")
    if holds_files(folder):
        raise UsageError(f"{folder} holds files already; give another --out, or --resume it")
    return folder


def _print_report(report, as_json: bool) -> None:
    """The table (best val accuracy first) or the JSON, then where the chart went."""
    results, rows = report.outcome.results, report.rows
    if as_json:
        typer.echo(jsonio.dumps({"folder": str(report.folder), "members": results, "table": rows}))
    else:
        from rich.console import Console
        from rich.table import Table

        title = f"sweep of {report.variant} ({printable(report.source)}): best val accuracy first"
        table = Table(title=title)
        ensembles = any("ensemble_val" in row for row in rows)  # a grid point with 2+ finished seeds
        for column in (*report.swept, "seeds", "val acc", "train acc", *["ensemble val"] * ensembles):
            table.add_column(column, justify="right")
        for row in rows:
            seeds = f"{row['seeds']}" + (f" ({row['diverged']} diverged)" if row["diverged"] else "")
            values = (f"{row[k]:g}" for k in report.swept)
            together = [f"{row['ensemble_val']:.4f}" if "ensemble_val" in row else "-"] * ensembles
            table.add_row(*values, seeds, _spread(row, "val"), _spread(row, "train"), *together)
        Console().print(table)
        seconds = report.outcome.seconds
        typer.echo(f"{len(results)} checkpoints and records in {report.folder} ({seconds:.1f}s of training)")
    if report.chart_failure:
        raise OSError(report.chart_failure)  # after the results: one line, exit 1
    if report.chart_error:
        typer.echo(f"no chart: {report.chart_error}", err=True)
    elif not as_json:
        typer.echo(f"chart: {report.chart}")


def _spread(row: dict, which: str) -> str:
    if row[f"{which}_mean"] is None:
        return "diverged"
    return f"{row[f'{which}_mean']:.4f} +/- {row[f'{which}_std']:.4f}"


def sweep_worker(arguments: dict) -> None:
    """One `--nproc` worker: `ptm sweep` with the same arguments, training its share."""
    run_as_worker(sweep_command, arguments)
