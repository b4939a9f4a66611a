"""`ptm sweep`: a hyperparameter grid trained as members of one run; a table, JSON and a chart."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ptm_func.catalog import OUTPUTS, TRAINABLE_NAMES
from ptm_func.data.dataset import check_same_data
from ptm_func.data.sources import load_dataset
from ptm_func.files import jsonio
from ptm_func.files.atomic import check_writable
from ptm_func.files.checkpoint import checkpoint_bytes
from ptm_func.files.records import run_info
from ptm_func.reports.plot import PlotUnavailable, sweep_chart
from ptm_func.runs import sweep
from ptm_func.training.compiling import will_compile
from ptm_func.training.config import book_setup
from ptm_func.training.devices import resolve_device
from ptm_func.training.distributed import barrier, join, leave
from ptm_func.training.members import uses_vmap

from .errors import UsageError, friendly_errors
from .launch import run_as_worker, run_workers, world_or_launch
from .options import Classes, DataSource, Device, NBlocks, NChans1, Tied, note, parse_classes
from .progress import TrainingProgress
from .signals import StopOnSignal
from ptm_func.text import names, printable

LIST_HELP = "Comma-separated values to sweep (e.g. 0.003,0.01,0.03); one value fixes it."


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
    model: str = typer.Argument(None, help=f"One of: {', '.join(TRAINABLE_NAMES)}. Not with --resume."),
    lr: str | None = typer.Option(None, help="Learning rates. " + LIST_HELP),
    momentum: str | None = typer.Option(None, help="SGD momentum values. " + LIST_HELP),
    dampening: str | None = typer.Option(None, help="SGD dampening values. " + LIST_HELP),
    weight_decay: str | None = typer.Option(None, help="SGD weight decay values. " + LIST_HELP),
    l2: str | None = typer.Option(None, "--l2", help="The book's L2 penalty lambdas. " + LIST_HELP),
    l1: str | None = typer.Option(None, "--l1", help="L1 penalty lambdas. " + LIST_HELP),
    seeds: int = typer.Option(
        1, help="Seeds per grid point: --seed, --seed + 1, ... (mean +/- std over them)."
    ),
    seed: int = typer.Option(123, help="The first seed."),
    epochs: int | None = typer.Option(None, help="Epochs for every member (book: 100)."),
    batch_size: int | None = typer.Option(None, help="Batch size (book: 64)."),
    eval_every: int | None = typer.Option(
        None, help="Val accuracy every N epochs (default 1; 0: last only)."
    ),
    chunk: int = typer.Option(
        64, help="Train at most K members at once (memory); the grid runs chunk by chunk."
    ),
    nproc: int = typer.Option(
        1, "--nproc", help="Split the members over N local worker processes (each its own device on GPUs)."
    ),
    data: str | None = DataSource,
    classes: str | None = Classes,
    device: str = Device,
    out: Path | None = typer.Option(None, help="Sweep folder (default runs/sweep-MODEL, numbered if taken)."),
    resume: Path | None = typer.Option(None, help="Continue the sweep in this folder where it stopped."),
    checkpoint_every: int = typer.Option(
        0, help="Also save every N epochs (0: at the end and on interruption)."
    ),
    compile: bool | None = typer.Option(
        None,
        "--compile/--no-compile",
        help="torch.compile the step (default: CUDA; CPU from 20 epochs, not for batchnorm and resdeep).",
    ),
    vmap: bool | None = typer.Option(
        None,
        "--vmap/--no-vmap",
        help="One vmapped step for all members of a chunk, or the single step member after member "
        "(default: vmap on CUDA; on CPU the loop, where vmap's batched conv costs ~2x).",
    ),
    n_chans1: int | None = NChans1,
    n_blocks: int | None = NBlocks,
    tied: bool | None = Tied,
    as_json: bool = typer.Option(False, "--json", help="Print every member's result as JSON on stdout."),
):
    """Sweep hyperparameters: every combination of the lists, times --seeds, trained together.

    Each member gets the checkpoint and record its own `ptm train` would write, in the sweep's
    folder; the table shows val accuracy (mean +/- std over seeds), best first; sweep.json and
    sweep.png (a line for one swept value, a heatmap for two) sit beside them.

    Ctrl-C or SIGTERM saves every member and tells you how to --resume.

    Example: ptm sweep net --lr 0.003,0.01,0.03 --weight-decay 0,0.0005 --seeds 2 --epochs 20

    Example: ptm sweep --resume runs/sweep-net

    Example: ptm sweep net --lr 0.003,0.01,0.03,0.1 --seeds 2 --nproc 2   (members split over 2 workers)
    """
    arguments = dict(locals())  # what --nproc's workers run again
    with friendly_errors():
        world = world_or_launch(nproc)
        if nproc > 1:
            if resume is None and model is None:
                raise UsageError("give a MODEL to sweep (or --resume FOLDER)")
            folder = resume or out or _unused(Path("runs") / f"sweep-{model}")
            if resume is None and folder.exists() and any(folder.iterdir()):
                raise UsageError(f"{folder} holds files already; give another --out, or --resume it")
            workers = {**arguments, "nproc": 1, "out": None if resume else folder}
            raise typer.Exit(run_workers(nproc, sweep_worker, workers))
        main = world is None or world.is_main
        if checkpoint_every < 0:
            raise UsageError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
        if chunk < 1:
            raise UsageError(f"--chunk must be >= 1, got {chunk}")
        dev = resolve_device(device)
        if resume is not None:
            if model is not None:
                raise UsageError("--resume continues the sweep as it was planned: give no MODEL")
            spec, members = sweep.read_spec(resume)
            folder, variant, swept, chunk = resume, spec["variant"], spec["swept"], spec["chunk"]
            net, _ = book_setup(variant, **spec["model_config"])
            data, classes = data or spec["data"], classes or ",".join(spec["classes"])
        else:
            if model is None:
                raise UsageError("give a MODEL to sweep (or --resume FOLDER)")
            values = {
                key: parsed
                for key, option, text in (
                    ("lr", "--lr", lr),
                    ("momentum", "--momentum", momentum),
                    ("dampening", "--dampening", dampening),
                    ("weight_decay", "--weight-decay", weight_decay),
                    ("l2_lambda", "--l2", l2),
                    ("l1_lambda", "--l1", l1),
                )
                if (parsed := parse_values(option, text)) is not None
            }
            if seeds < 1:
                raise UsageError(f"--seeds must be >= 1, got {seeds}")
            given = dict(
                epochs=epochs,
                batch_size=batch_size,
                eval_every=eval_every,
                compile=compile,
                members_vmap=vmap,
                n_chans1=n_chans1,
                n_blocks=n_blocks,
                tied=tied,
            )
            try:
                net, base = book_setup(model, **{k: v for k, v in given.items() if v is not None})
                members = sweep.grid(model, base, values, range(seed, seed + seeds))
            except ValueError as err:
                raise UsageError(str(err)) from None
            variant, swept = model, [k for k, v in values.items() if len(v) > 1]
            folder = out or _unused(Path("runs") / f"sweep-{model}")
        if world is None and resume is None and folder.exists() and any(folder.iterdir()):
            raise UsageError(f"{folder} holds files already; give another --out, or --resume it")
        if main:
            for path in (folder / sweep.SPEC_NAME, folder / "sweep.png"):
                check_writable(path, 1 << 16)
            check_writable(folder / "probe.safetensors", checkpoint_bytes(net) * min(chunk, len(members)))
        if world is not None:
            dev = join(world, dev)
        typer.echo(f"loading data ({printable(data or 'auto')}) onto {dev} ...", err=True)
        dataset = load_dataset(data, parse_classes(classes), dev, notify=note, n_classes=OUTPUTS)
        if resume is not None:
            check_same_data(spec.get("fingerprint"), dataset)
        else:
            spec = {
                "variant": variant,
                "model_config": dict(net.config),
                "swept": swept,
                "grid": {k: v for k, v in values.items()},
                "seeds": list(range(seed, seed + seeds)),
                "chunk": chunk,
                "data": dataset.source,
                "classes": list(dataset.classes),
                "fingerprint": dataset.fingerprint,
                "members": [sweep.member_entry(m) for m in members],
            }
            if main:
                sweep.write_spec(folder, spec)
        lead = members[0].config
        how = "one vmapped step" if uses_vmap(lead, dev) else "the step member after member"
        typer.echo(
            f"sweeping {variant} ({net.book_class}): {len(members)} members "
            f"({', '.join(swept) or 'seeds only'}"
            f" x {len(spec['seeds'])} seeds) in chunks of {min(chunk, len(members))} through {how}, "
            f"on {len(dataset.train)} images, classes {names(dataset.classes)} ({printable(dataset.source)})",
            err=True,
        )
        if will_compile(lead, dev, net.name):
            note("compiling the train step (torch.compile): epoch 1 takes longer; --no-compile skips it")
        facts = {
            "variant": variant,
            "classes": list(dataset.classes),
            "data": dataset.source,
            "fingerprint": dataset.fingerprint,
            "device": str(dev),
            "sweep_folder": str(folder),
        }
        progress = TrainingProgress(lead.epochs)
        stop = StopOnSignal()
        runner = sweep.SweepRun(
            net,
            dataset,
            folder,
            run_info(variant, net, lead, dataset, dev),
            facts,
            dev,
            save_every=checkpoint_every,
            on_chunk=lambda n, total, todo: typer.echo(
                f"chunk {n}/{total}: {len(todo)} members ({todo[0].name} ...)", err=True
            ),
            on_epoch=lambda stats, ts: progress.on_epoch(stats),
            on_step=progress.on_step,
            on_note=note,
            stop_requested=stop,
        )
        mine = members if world is None else members[world.rank :: world.size]  # a rank's share
        with stop.installed():
            with progress.running():
                outcome = runner.run(mine, chunk)
        if outcome.interrupted:
            typer.echo(
                f"ptm: interrupted; every member of the chunk is saved in {folder}. "
                f"Resume with: ptm sweep --resume {folder}",
                err=True,
            )
            raise typer.Exit(128 + stop.signal)
        if world is not None:  # every rank's members are saved: rank 0 reports them all
            barrier()
            leave()
            if not main:
                return
            outcome.results = [sweep.saved_result(m, sweep.checkpoint_path(folder, m)) for m in members]
        rows = sweep.table(outcome.results, swept)
        spec["results"] = {"members": outcome.results, "table": rows}
        sweep.write_spec(folder, spec)
    with friendly_errors():
        _report(variant, swept, outcome, rows, folder, dataset, as_json)


def _report(variant, swept, outcome, rows, folder: Path, dataset, as_json: bool) -> None:
    if as_json:
        typer.echo(jsonio.dumps({"folder": str(folder), "members": outcome.results, "table": rows}))
    else:
        table = Table(title=f"sweep of {variant} ({printable(dataset.source)}): best val accuracy first")
        for key in swept:
            table.add_column(key, justify="right")
        for column in ("seeds", "val acc", "train acc"):
            table.add_column(column, justify="right")
        for row in rows:

            def spread(which, row=row):
                if row[f"{which}_mean"] is None:
                    return "diverged"
                return f"{row[f'{which}_mean']:.4f} +/- {row[f'{which}_std']:.4f}"

            seeds = f"{row['seeds']}" + (f" ({row['diverged']} diverged)" if row["diverged"] else "")
            table.add_row(*(f"{row[k]:g}" for k in swept), seeds, spread("val"), spread("train"))
        Console().print(table)
        typer.echo(
            f"{len(outcome.results)} checkpoints and records in {folder} ({outcome.seconds:.1f}s of training)"
        )
    try:
        chart = sweep_chart(rows, swept, folder / "sweep.png", f"sweep of {variant}: val accuracy")
        if not as_json:
            typer.echo(f"chart: {chart}")
    except PlotUnavailable as err:
        typer.echo(f"no chart: {err}", err=True)


def sweep_worker(arguments: dict) -> None:
    """One `--nproc` worker: `ptm sweep` with the same arguments, training its share."""
    run_as_worker(sweep_command, arguments)


def _unused(folder: Path) -> Path:
    """`folder`, or folder-2, folder-3, ...: the first that does not exist or is empty."""
    candidate, number = folder, 1
    while candidate.exists() and any(candidate.iterdir()):
        number += 1
        candidate = folder.with_name(f"{folder.name}-{number}")
    return candidate
