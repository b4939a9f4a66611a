"""`ptm train` and `ptm eval`: parse, call the library, print."""

from __future__ import annotations

from pathlib import Path

import typer

from ptm_func.files import jsonio
from ptm_func.text import printable

from . import train_options
from .errors import UsageError, friendly_errors
from .launch import run_as_worker, run_workers, world_or_launch
from .options import (
    Augment,
    ChannelsLast,
    Classes,
    DataSource,
    Device,
    ModelArgs,
    ModelRef,
    NBlocks,
    NChans1,
    Tied,
    Track,
    as_json_option,
    model_args,
    note,
    optional,
    parse_augment,
    parse_classes,
    use_model_ref,
)
from .progress import TrainingProgress


def train(
    model: str = train_options.Model,
    data: str | None = DataSource,
    classes: str | None = Classes,
    epochs: int | None = train_options.Epochs,
    eval_every: int | None = train_options.EvalEvery,
    batch_size: int | None = train_options.BatchSize,
    lr: float | None = train_options.Lr,
    momentum: float | None = train_options.Momentum,
    weight_decay: float | None = train_options.WeightDecay,
    l2: float | None = train_options.L2,
    l1: float | None = train_options.L1,
    seed: int | None = train_options.Seed,
    device: str = Device,
    out: Path | None = train_options.Out,
    force: bool = train_options.Force,
    resume: Path | None = train_options.Resume,
    config: Path | None = train_options.Config,
    checkpoint_every: int = train_options.CheckpointEvery,
    replicas: int = train_options.Replicas,
    nproc: int = train_options.Nproc,
    compile: bool | None = train_options.Compile,
    channels_last: bool | None = ChannelsLast,
    book_quirks: bool = train_options.BookQuirks,
    augment: str | None = Augment,
    n_chans1: int | None = NChans1,
    n_blocks: int | None = NBlocks,
    tied: bool | None = Tied,
    model_arg: list[str] | None = ModelArgs,
    track: str | None = Track,
    as_json: bool = as_json_option("Print a JSON summary on stdout."),
):
    """Train a chapter-8 network with the functional step; save a safetensors checkpoint.

    Beside the checkpoint go NAME.run.json (model, full config, data) and NAME.metrics.jsonl.

    NAME.metrics.jsonl gets one line per finished epoch (loss, accuracies, seconds): `ptm plot` draws it.

    Ctrl-C or SIGTERM finishes the current step, saves, and tells you how to --resume.

    Example: ptm train net --epochs 20 --device cpu

    Example: ptm train res --data bundled --epochs 10 --eval-every 2

    Example: ptm train net --nproc 2 --device cpu   (2 data-parallel workers)

    Example: ptm train net --epochs 20 --track tensorboard   (then: tensorboard --logdir runs)

    Example: ptm train res --data cifar10 --classes all --augment flip,crop   (ten classes, augmented)

    Example: ptm train examples/kernels.py:KernelNet --model-arg kernel=(5,5)   (your own nn.Module)

    Example: ptm train net --config runs/tune-net/best.json   (the best settings ptm tune found)
    """
    arguments = dict(locals())  # what --nproc's workers run again
    with friendly_errors():
        world = world_or_launch(nproc, device)
        if nproc > 1:
            raise typer.Exit(run_workers(nproc, train_worker, {**arguments, "nproc": 1}))
        from ptm_func.runs.training import run_training

        settings = optional(
            epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
            l2_lambda=l2, l1_lambda=l1, seed=seed, compile=compile, eval_every=eval_every,
            n_chans1=n_chans1, n_blocks=n_blocks, tied=tied, augment=parse_augment(augment),
        )  # fmt: skip
        settings.update(model_args(model_arg), **optional(channels_last=channels_last))
        if config is not None:
            settings, data, classes = _with_settings_file(config, model, settings, data, classes)
        outcome = run_training(
            model, data=data, classes=parse_classes(classes), device=device, out=out, force=force,
            resume=resume, checkpoint_every=checkpoint_every, replicas=replicas, book_quirks=book_quirks,
            reporter=TrainingProgress(), world=world, stop_on_signals=True, track=track, **settings,
        )  # fmt: skip
    with friendly_errors():
        if hasattr(outcome, "report"):  # --replicas (a ReplicasOutcome)
            _print_replicas(outcome, as_json, model)
        else:
            _print_run(outcome, as_json, model)


def _with_settings_file(
    path: Path, model: str, settings: dict, data, classes
) -> tuple[dict, str | None, str | None]:
    """The file's settings under the options given, and the data it was tuned on unless given."""
    tuned, where = _settings_file(path, model)
    if data is None and where["data"] is not None:
        data = where["data"]
        note(f"training on the data {path} was tuned on: {printable(data)} (--data overrides)")
    if classes is None and where["classes"] is not None:
        classes = ",".join(where["classes"])
    return {**tuned, **settings}, data, classes


def _settings_file(path: Path, model: str) -> tuple[dict, dict]:
    """A settings file's settings (ptm tune's best.json), for the model it names, and its data."""
    from ptm_func.nets.references import use_model
    from ptm_func.runs.study_report import read_config

    named, settings, where = read_config(path)
    if named != use_model(model):
        raise UsageError(f"--config {path} holds settings for {named!r}, not {model!r}")
    return settings, where


def _print_run(outcome, as_json: bool, given: str) -> None:
    """The result, or how the run stopped; the exit code says which."""
    result, saved_to, failure = outcome.result, outcome.checkpoint, outcome.save_failed
    if failure:
        typer.echo(
            f"ptm: error: {printable(failure)}; saved to {saved_to} instead "
            "(move it and its .train.safetensors where they belong)",
            err=True,
        )
    if as_json:
        typer.echo(jsonio.dumps(outcome.summary))
    if result.diverged_in is not None:
        typer.echo(
            f"ptm: error: the loss became NaN or infinite in epoch {result.diverged_in}; stopped. "
            f"Saved the last finite state ({outcome.position}) to {saved_to}. Try a lower --lr.",
            err=True,
        )
        raise typer.Exit(1)
    if result.interrupted:
        typer.echo(
            f"ptm: interrupted at {outcome.position}; checkpoint saved to {saved_to}. "
            f"Resume with: ptm train {given} --resume {saved_to}",
            err=True,
        )
        raise typer.Exit(128 + outcome.signal)
    if not as_json:
        typer.echo(
            f"{outcome.variant}: train accuracy {result.train_accuracy:.4f}, val accuracy "
            f"{result.val_accuracy:.4f} ({result.seconds:.1f}s); checkpoint: {saved_to}"
        )
        typer.echo(f"record: {outcome.record} (learning curves: ptm plot {saved_to})")
    if failure:
        raise typer.Exit(1)


def _print_replicas(outcome, as_json: bool, given: str) -> None:
    """Each replica, the mean +/- std and the ensemble; or how the run stopped."""
    folder = outcome.folder
    if outcome.interrupted:
        typer.echo(
            f"ptm: interrupted; every replica is saved in {folder}. "
            f"Resume with: ptm train {given} --resume {folder}",
            err=True,
        )
        raise typer.Exit(128 + outcome.signal)
    summary = outcome.summary
    diverged = summary.get("diverged_members", [])
    if as_json:
        typer.echo(jsonio.dumps(summary))
    else:
        _replica_lines(outcome.variant, summary, diverged)
        typer.echo(f"checkpoints and records in {folder} (curves: ptm plot {folder}/*.metrics.jsonl)")
    if len(diverged) == len(summary["seeds"]):
        typer.echo(
            f"ptm: error: every replica's loss became NaN or infinite (first in epoch "
            f"{summary['diverged_in_epoch']}); their last finite weights are in {folder}. Try a lower --lr.",
            err=True,
        )
    if diverged:
        raise typer.Exit(1)


def _replica_lines(variant: str, summary: dict, diverged: list[int]) -> None:
    columns = ("seeds", "train_accuracy", "val_accuracy", "checkpoints")
    for r, (seed, train, val, path) in enumerate(zip(*(summary[c] for c in columns), strict=True)):
        scores = "diverged: its last finite weights" if r in diverged else f"train {train:.4f}, val {val:.4f}"
        typer.echo(f"replica {r} (seed {seed}): {scores}  {path}")
    tr, va = summary["train_accuracy_mean_std"], summary["val_accuracy_mean_std"]
    together, kept = summary["ensemble_val_accuracy"], len(summary["seeds"]) - len(diverged)
    if va is not None:
        ensemble = "" if together is None else f"; the ensemble (mean of probabilities): val {together:.4f}"
        typer.echo(
            f"{variant} x{kept}: train {tr['mean']:.4f} +/- {tr['std']:.4f}, "
            f"val {va['mean']:.4f} +/- {va['std']:.4f}{ensemble} ({summary['seconds']:.1f}s)"
        )


def train_worker(arguments: dict) -> None:
    """One `--nproc` worker: `ptm train` with the same arguments, in the launcher's world."""
    run_as_worker(train, arguments)


def evaluate_checkpoint(
    checkpoints: list[Path] = typer.Argument(
        ..., help="One or more .safetensors files written by ptm; several are also judged as an ensemble."
    ),
    data: str | None = typer.Option(
        None, "--data", "--data-dir", help="Default: the data the (first) checkpoint was trained on."
    ),
    classes: str | None = typer.Option(None, "--classes", help="Default: the classes it was trained on."),
    device: str = Device,
    model: str | None = ModelRef,
    as_json: bool = as_json_option("Print the result as JSON on stdout."),
):
    """Report train and val accuracy of a checkpoint (eval mode), or of several and their ensemble.

    The ensemble predicts the class with the highest mean of the members' probabilities.

    Example: ptm eval runs/net-seed123.safetensors

    Example: ptm eval runs/sweep-dropout/dropout-seed12{3,4,5}.safetensors --json   (an ensemble)

    Example: ptm eval runs/KernelNet-seed123.safetensors --model examples/kernels.py:KernelNet
    """
    with friendly_errors():
        use_model_ref(model)
        from ptm_func.reports.scores import score_checkpoints

        result = score_checkpoints(checkpoints, data, parse_classes(classes), device, notify=note)
    if as_json:
        typer.echo(jsonio.dumps(result))
        return
    rows = result.get("members", [result])
    for row in rows:
        name = row["checkpoint"] if "members" in result else row["model"]
        accuracies = f"train accuracy {row['train_accuracy']:.4f}, val accuracy {row['val_accuracy']:.4f}"
        typer.echo(f"{name}: {accuracies}")
    if "ensemble" in result:
        together = result["ensemble"]
        typer.echo(
            f"ensemble of {len(rows)} (mean of probabilities): train accuracy "
            f"{together['train_accuracy']:.4f}, val accuracy {together['val_accuracy']:.4f}"
        )
