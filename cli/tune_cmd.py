"""`ptm tune`: a pruned Optuna search whose trials train as members; a table and best.json."""

from __future__ import annotations

from pathlib import Path

import typer

from ptm_func.files import jsonio
from ptm_func.text import printable

from . import tune_options as opt
from .errors import UsageError, friendly_errors
from .options import (
    Augment,
    ChannelsLast,
    Classes,
    DataSource,
    Device,
    ModelArgs,
    Track,
    as_json_option,
    model_args,
    optional,
    parse_augment,
    parse_classes,
)
from .progress import TrainingProgress
from .sweep_cmd import parse_values


def tune_command(
    model: str | None = opt.Model,
    lr: str | None = opt.Lr,
    momentum: str | None = opt.Momentum,
    dampening: str | None = opt.Dampening,
    weight_decay: str | None = opt.WeightDecay,
    l2: str | None = opt.L2,
    l1: str | None = opt.L1,
    seed_choices: str | None = opt.SeedChoices,
    n_chans1: str | None = opt.NChans1,
    n_blocks: str | None = opt.NBlocks,
    trials: int = opt.Trials,
    epochs: int = opt.Epochs,
    batch: int | None = opt.Batch,
    batch_size: int | None = opt.BatchSize,
    sampler: str = opt.Sampler,
    pruner: str = opt.Pruner,
    min_epochs: int = opt.MinEpochs,
    seed: int = opt.Seed,
    storage: str | None = opt.Storage,
    study: str | None = opt.Study,
    out: Path | None = opt.Out,
    show: str | None = opt.Show,
    pbt: bool = opt.Pbt,
    population: int = opt.Population,
    interval: int = opt.Interval,
    quantile: float = opt.Quantile,
    resample: float = opt.Resample,
    perturb: str = opt.Perturb,
    resume: Path | None = opt.Resume,
    data: str | None = DataSource,
    classes: str | None = Classes,
    device: str = Device,
    compile: bool | None = opt.Compile,
    vmap: bool | None = opt.Vmap,
    channels_last: bool | None = ChannelsLast,
    augment: str | None = Augment,
    model_arg: list[str] | None = ModelArgs,
    track: str | None = Track,
    as_json: bool = as_json_option("Print the study's best trials as JSON on stdout."),
):
    """Search hyperparameters with Optuna: trials train K at a time, bad ones are pruned early.

    Each trial leaves the checkpoint and record its `ptm train` would, in runs/tune-STUDY; the
    study lives in Optuna's storage, so the same command again (or in another terminal, or on
    another machine with a database --storage) continues it. A worker that dies mid-trial is
    noticed and its settings are tried again. The best settings go to best.json, which
    `ptm train MODEL --config runs/tune-STUDY/best.json` trains again (bit for bit where the
    trials looped, the CPU default; to rounding after --vmap, the CUDA default).

    Example: ptm tune net --lr 1e-3:1e-1:log --momentum 0:0.95 --trials 32 --epochs 20

    Example: ptm tune net --lr 1e-3:1e-1:log --storage postgresql://ptm@db/ptm   (several machines)

    Example: ptm tune width --n-chans1 16,32,64 --lr 3e-3,1e-2,3e-2 --sampler grid --trials 9

    Example: ptm tune --show net   (the study as its storage holds it)

    Example: ptm tune net --pbt --population 8 --interval 4 --lr 1e-3:1e-1:log --epochs 20
    (population-based training in one run: runs/pbt-net, its lineage in pbt.json, pbt.png)
    """
    with friendly_errors():
        from ptm_func.runs import study_report

        if show is not None:
            _print(study_report.show_study(show, storage), as_json)
            return
        texts = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay}
        texts.update(l2_lambda=l2, l1_lambda=l1, seed=seed_choices, n_chans1=n_chans1, n_blocks=n_blocks)
        settings = optional(
            epochs=epochs, batch_size=batch_size, compile=compile, members_vmap=vmap,
            augment=parse_augment(augment), channels_last=channels_last,
        )  # fmt: skip
        settings.update(model_args(model_arg))
        space = {k: v for k, v in texts.items() if v is not None}
        if pbt or resume is not None:
            _population(model, space, population, interval, quantile, resample, perturb, seed, out, resume,
                        data, classes, device, as_json, settings)  # fmt: skip
            return
        search = dict(trials=trials, batch=batch, sampler=sampler, pruner=pruner, min_epochs=min_epochs,
                      seed=seed, storage=storage, study=study, out=out, track=track)  # fmt: skip
        _study(model, space, search, data, classes, device, as_json, settings)


def _study(model, space, search, data, classes, device, as_json, settings) -> None:
    """An Optuna study (tune.run_tune): its best trials; Ctrl-C says how to continue it."""
    from ptm_func.runs import tune

    report = tune.run_tune(
        model, space=space, **search, data=data, classes=parse_classes(classes), device=device,
        reporter=TrainingProgress(), stop_on_signals=True, **settings,
    )  # fmt: skip
    _print(report, as_json)
    if report.interrupted:
        typer.echo(
            f"ptm: interrupted; the trials in training were marked failed and will run again when "
            f"you give the same command (study {report.study!r})",
            err=True,
        )
        raise typer.Exit(128 + report.signal)


def _population(model, space, population, interval, quantile, resample, perturb, seed, out, resume, data,
                classes, device, as_json, settings) -> None:  # fmt: skip
    """--pbt: population-based training in one run; the members, best first, and the lineage."""
    from ptm_func.runs.pbt import Rules, run_pbt

    factors = tuple(parse_values("--perturb", perturb) or ())
    if len(factors) != 2:
        raise UsageError(f"--perturb takes two factors, e.g. 0.8,1.2, got {perturb!r}")
    rules = Rules(interval, quantile, resample, (factors[0], factors[1]))
    if resume is not None:
        settings = {}  # the saved run's
    report = run_pbt(
        model, space=space, population=population, rules=rules, seed=seed, out=out, resume=resume, data=data,
        classes=parse_classes(classes), device=device, reporter=TrainingProgress(), stop_on_signals=True,
        **settings,
    )  # fmt: skip
    if report.interrupted:
        typer.echo(f"ptm: interrupted; saved. Resume with: ptm tune --pbt --resume {report.folder}", err=True)
        raise typer.Exit(128 + report.signal)
    if as_json:
        typer.echo(
            jsonio.dumps({"folder": str(report.folder), "members": report.members, "events": report.events})
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"population-based training of {report.variant}: best val accuracy first")
    params = [k for k in report.members[0] if k not in ("member", "seed", "copies", "train_accuracy",
                                                         "val_accuracy", "checkpoint")]  # fmt: skip
    for column in ("member", *params, "copied", "val acc", "train acc"):
        table.add_column(column, justify="right")
    for row in report.members:
        values = [f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in params]
        table.add_row(str(row["member"]), *values, str(row["copies"]), f"{row['val_accuracy']:.4f}",
                      f"{row['train_accuracy']:.4f}")  # fmt: skip
    Console().print(table)
    typer.echo(f"{len(report.events)} exploit copies; lineage in {report.folder / 'pbt.json'}")
    typer.echo(f"schedules: {report.chart}" if report.chart else "no chart: pip install 'ptm_func[plot]'")


def _print(report, as_json: bool) -> None:
    """The best trials and the counts, or the JSON."""
    if as_json:
        keys = ("study", "storage", "folder", "counts", "rows", "trained_here", "best_file")
        typer.echo(
            jsonio.dumps(
                {k: str(v) if isinstance(v, Path) else v for k, v in vars(report).items() if k in keys}
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    counts = ", ".join(f"{n} {state}" for state, n in sorted(report.counts.items())) or "no trials"
    table = Table(title=f"study {report.study!r} of {report.variant}: {counts}; best val accuracy first")
    params = [k for k in (report.rows[0] if report.rows else {}) if k not in _COLUMNS]
    for column in ("trial", *params, "val acc", "train acc", "epochs"):
        table.add_column(column, justify="right")
    for row in report.rows:
        values = [f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in params]
        train = "-" if row["train_accuracy"] is None else f"{row['train_accuracy']:.4f}"
        table.add_row(str(row["trial"]), *values, f"{row['val_accuracy']:.4f}", train, str(row["epochs"]))
    Console().print(table)
    typer.echo(f"study storage: {printable(report.storage)}; trials' files in {report.folder}")
    if report.best_file is not None:
        typer.echo(f"best settings: {report.best_file}; train them again: {printable(report.retrain)}")
    dashboard = f"optuna-dashboard {printable(report.storage)}"
    typer.echo(f"look at it: {dashboard}   (pip install 'ptm_func[dashboard]')")


_COLUMNS = ("trial", "val_accuracy", "train_accuracy", "epochs", "checkpoint")
