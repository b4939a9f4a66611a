"""`ptm train` and `ptm eval`: parse, call the library, print."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from ptm_func.catalog import OUTPUTS, TRAINABLE_NAMES
from ptm_func.data.dataset import check_same_data
from ptm_func.data.sources import load_dataset
from ptm_func.errors import CheckpointError, RecordError
from ptm_func.files import jsonio
from ptm_func.files.atomic import check_writable, remove_stale_temps
from ptm_func.files.checkpoint import checkpoint_bytes, load_ensemble, save_checkpoint, save_or_rescue
from ptm_func.files.records import RunRecord, replica_path, run_info, unused_run_path
from ptm_func.files.resume import load_run, save_run
from ptm_func.research.ensemble import ensemble_accuracy
from ptm_func.training.compiling import will_compile
from ptm_func.training.config import SEED_LIMIT, book_setup, config_dict
from ptm_func.training.devices import resolve_device
from ptm_func.training.distributed import join, leave
from ptm_func.training.evaluate import evaluate
from ptm_func.training.loop import fit, fit_ensemble
from ptm_func.training.state import EpochStats, TrainState

from .errors import UsageError, friendly_errors
from .launch import run_as_worker, run_workers, world_or_launch
from .options import Classes, DataSource, Device, NBlocks, NChans1, Tied, note, parse_classes
from .progress import TrainingProgress
from .signals import StopOnSignal
from ptm_func.text import names, printable


def train(
    model: str = typer.Argument(
        ..., help=f"One of: {', '.join(TRAINABLE_NAMES)} (l2 is Net with the L2 penalty)."
    ),
    data: str | None = DataSource,
    classes: str | None = Classes,
    epochs: int | None = typer.Option(None, help="Epochs (book: 100). With --resume: the new total."),
    eval_every: int | None = typer.Option(
        None,
        help="Measure val accuracy every N epochs (default 1; 0: after the last only). "
        "The weights do not depend on it.",
    ),
    batch_size: int | None = typer.Option(None, help="Batch size (book: 64)."),
    lr: float | None = typer.Option(None, help="Learning rate (book: 1e-2, resdeep 3e-3)."),
    momentum: float | None = typer.Option(None, help="SGD momentum (book: 0)."),
    weight_decay: float | None = typer.Option(None, help="SGD weight decay (book: 0)."),
    l2: float | None = typer.Option(
        None, "--l2", help="The book's L2 penalty lambda on the loss (l2 variant: 1e-3)."
    ),
    l1: float | None = typer.Option(None, "--l1", help="L1 penalty lambda on the loss."),
    seed: int | None = typer.Option(None, help="Seed for init, shuffling and dropout (book: 123)."),
    device: str = Device,
    out: Path | None = typer.Option(
        None,
        help="Checkpoint path, .safetensors (default runs/MODEL-seedSEED.safetensors, numbered -2, -3, ... "
        "when an earlier run has it; --force overwrites).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Reuse the default checkpoint path even if a run is there."
    ),
    resume: Path | None = typer.Option(
        None, help="Continue the run saved at this checkpoint, exactly where it stopped."
    ),
    checkpoint_every: int = typer.Option(
        0, help="Also save every N epochs (0: only at the end or on interruption)."
    ),
    replicas: int = typer.Option(
        1, help="Train K independently initialised copies at once (torch.func.vmap); replica r uses seed+r."
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        help="Train on N local worker processes, data parallel (torch.distributed: gloo on CPU, NCCL "
        "with one GPU each); --batch-size stays the global batch. Under torchrun leave it out: ptm "
        "reads RANK and WORLD_SIZE.",
    ),
    compile: bool | None = typer.Option(
        None,
        "--compile/--no-compile",
        help="torch.compile the step (default: on for CUDA; on CPU from 20 epochs, except for "
        "batchnorm and resdeep, where it does not pay).",
    ),
    book_quirks: bool = typer.Option(
        False,
        "--book-quirks",
        help="Train unshuffled and validate in train mode, as the book's notebook did.",
    ),
    n_chans1: int | None = NChans1,
    n_blocks: int | None = NBlocks,
    tied: bool | None = Tied,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
):
    """Train a chapter-8 network with the functional step; save a safetensors checkpoint.

    Beside the checkpoint go NAME.run.json (model, full config, data) and NAME.metrics.jsonl.

    NAME.metrics.jsonl gets one line per finished epoch (loss, accuracies, seconds): `ptm plot` draws it.

    Ctrl-C or SIGTERM finishes the current step, saves, and tells you how to --resume.

    Example: ptm train net --epochs 20 --device cpu

    Example: ptm train res --data bundled --epochs 10 --eval-every 2

    Example: ptm train net --nproc 2 --device cpu   (2 data-parallel workers)
    """
    arguments = dict(locals())  # what --nproc's workers run again
    with friendly_errors():
        world = world_or_launch(nproc)
        if nproc > 1:
            raise typer.Exit(run_workers(nproc, train_worker, {**arguments, "nproc": 1}))
        if world is not None and replicas > 1:
            raise UsageError("--replicas with several ranks: split members over ranks with ptm sweep --nproc")
        if world is not None and book_quirks:
            raise UsageError("--book-quirks validates batch by batch in train mode: one process only")
        if checkpoint_every < 0:
            raise UsageError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
        if replicas < 1:
            raise UsageError(f"--replicas must be >= 1, got {replicas}")
        if replicas > 1 and (resume is not None or checkpoint_every):
            raise UsageError(
                "--replicas trains in one go: --resume and --checkpoint-every are for single runs"
            )
        if out is not None and out.suffix != ".safetensors":
            raise UsageError(f"--out must name a .safetensors file, got {out}")
        dev = resolve_device(device)
        main = world is None or world.is_main  # the rank that prints and writes
        if world is not None:
            dev = join(world, dev)
        given = dict(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            l2_lambda=l2,
            l1_lambda=l1,
            seed=seed,
            compile=compile,
            eval_every=eval_every,
            n_chans1=n_chans1,
            n_blocks=n_blocks,
            tied=tied,
        )
        given = {k: v for k, v in given.items() if v is not None}
        if book_quirks:
            given.update(shuffle=False, eval_train_mode=True)
        if resume is not None:
            net, config, start, saved = _resume_plan(model, resume, given, dev)
            out = out or resume
            data = data or saved.get("data") or saved.get("data_dir")
            classes = classes or ",".join(saved.get("classes", []))
        else:
            start, saved = None, {}
            try:
                net, config = book_setup(model, **given)
            except ValueError as err:
                raise UsageError(str(err)) from None
            if config.seed + replicas - 1 >= SEED_LIMIT:
                raise UsageError(f"--seed + --replicas must stay below 2**63, got {config.seed} + {replicas}")
            default = Path("runs") / f"{model}-seed{config.seed}.safetensors"
            out = out or (default if force else unused_run_path(default))
        if main:
            check_writable(out, checkpoint_bytes(net))
            remove_stale_temps(out)
        typer.echo(f"loading data ({printable(data or 'auto')}) onto {dev} ...", err=True)
        dataset = load_dataset(data, parse_classes(classes), dev, notify=note, n_classes=OUTPUTS)
        if start is not None:
            check_same_data(saved.get("fingerprint"), dataset)
        facts = {
            "variant": model,
            "classes": list(dataset.classes),
            "data": dataset.source,
            "fingerprint": dataset.fingerprint,
            "device": str(dev),
        }
        where = f" from {_position(start)}" if start else ""
        typer.echo(
            f"training {model} ({net.book_class}, {net.config}){where} on {len(dataset.train)} images, "
            f"validating on {len(dataset.val)}, classes {names(dataset.classes)} "
            f"({printable(dataset.source)})",
            err=True,
        )
        if will_compile(config, dev, net.name):
            note("compiling the train step (torch.compile): epoch 1 takes longer; --no-compile skips it")
        if world is not None:
            note(f"{world.size} ranks, each training its slice of every batch of {config.batch_size}")
        record = _Record(out) if main else _NoRecord(out)
        extra = (
            {"replicas": replicas, "seeds": [config.seed + r for r in range(replicas)]}
            if replicas > 1
            else {}
        )
        record.start(
            run_info(model, net, config, dataset, dev, **extra),
            resumed_from=resume,
            at_epoch=start.epoch if start else 0,
        )

        progress = TrainingProgress(config.epochs, start.epoch if start else 0)
        if replicas > 1:
            return _train_ensemble(
                model, net, dataset, config, replicas, out, facts, progress, record, as_json
            )

        def on_epoch(stats: EpochStats, ts) -> None:
            progress.on_epoch(stats)
            record.log_epoch(stats)
            if main and checkpoint_every and ts.epoch % checkpoint_every == 0 and ts.epoch < config.epochs:
                try:
                    save_run(out, net, ts, config, facts)
                except CheckpointError as err:  # the final save tries again, with a rescue
                    note(f"{err}; training goes on")

        stop = StopOnSignal()
        with stop.installed():  # until saved: a signal now only asks to stop, it cannot cut the save
            with progress.running():
                result = fit(
                    net,
                    dataset,
                    config,
                    start=start,
                    on_epoch=on_epoch,
                    on_step=progress.on_step,
                    stop_requested=stop,
                    world=world,
                )
            ts = result.train_state
            saved_to, failure = out, None
            if main:
                saved_to, failure = save_or_rescue(
                    lambda path: save_run(path, net, ts, config, {**facts, **result.summary()}), out
                )
        if world is not None:
            leave()
        status = _status(result.interrupted, result.diverged_in, ts)
        record.finish({**result.summary(), **status, "checkpoint": str(saved_to)})
    summary = {"model": model, "checkpoint": str(saved_to), "record": str(record.metrics), **status}
    summary.update(result.summary())
    if failure:
        summary["save_failed"] = failure
        typer.echo(
            f"ptm: error: {printable(failure)}; saved to {saved_to} instead "
            "(move it and its .train.safetensors where they belong)",
            err=True,
        )
    if as_json:
        typer.echo(jsonio.dumps(summary))
    if result.diverged_in is not None:
        typer.echo(
            f"ptm: error: the loss became NaN or infinite in epoch {result.diverged_in}; stopped. "
            f"Saved the last finite state ({_position(ts)}) to {saved_to}. Try a lower --lr.",
            err=True,
        )
        raise typer.Exit(1)
    if result.interrupted:
        typer.echo(
            f"ptm: interrupted at {_position(ts)}; checkpoint saved to {saved_to}. "
            f"Resume with: ptm train {model} --resume {saved_to}",
            err=True,
        )
        raise typer.Exit(128 + stop.signal)
    if not as_json:
        typer.echo(
            f"{model}: train accuracy {result.train_accuracy:.4f}, val accuracy {result.val_accuracy:.4f} "
            f"({result.seconds:.1f}s); checkpoint: {saved_to}"
        )
        typer.echo(f"record: {record.metrics} (learning curves: ptm plot {saved_to})")
    if failure:
        raise typer.Exit(1)


def _resume_plan(model: str, resume: Path, given: dict, dev) -> tuple:
    """The saved run's model, config (epochs / compile / eval_every may change), position and facts."""
    ckpt, start, config = load_run(resume, dev)
    saved = ckpt.training
    if saved.get("variant") != model:
        raise UsageError(f"{resume} is a {printable(saved.get('variant'))!r} run, not {model!r}")
    adjustable = ("epochs", "compile", "eval_every")
    ignored = sorted(set(given) - set(adjustable))
    if ignored:
        note(f"resuming uses the saved settings; ignoring {', '.join(ignored)}")
    try:
        config = replace(config, **{k: given[k] for k in adjustable if k in given})
    except ValueError as err:
        raise UsageError(str(err)) from None
    if start.epoch >= config.epochs:
        raise UsageError(
            f"{resume} has trained {start.epoch} of {config.epochs} epochs already; "
            f"give --epochs above {start.epoch} to train on"
        )
    return ckpt.model, config, start, saved


def _position(ts: TrainState) -> str:
    """Where a run stands, numbered as the epoch lines are: `epoch 3, step 37`."""
    return f"epoch {ts.epoch + 1}, step {ts.step_in_epoch}"


def _status(interrupted: bool, diverged_in: int | None, ts: TrainState) -> dict:
    """How a run stopped, for its JSON and record: nothing when it finished."""
    at = {"epoch": ts.epoch + 1, "step": ts.step_in_epoch}
    if diverged_in is not None:
        return {"diverged_in_epoch": diverged_in, "saved_at": at}
    return {"interrupted_at": at} if interrupted else {}


def _train_ensemble(variant, net, data, config, replicas, out, facts, progress, record, as_json):
    """The --replicas path: vmap-train, save one checkpoint per replica, report each, the mean
    +/- std and the ensemble (the mean of their probabilities)."""

    def on_epoch(stats: EpochStats, ts) -> None:
        progress.on_epoch(stats)
        record.log_epoch(stats)

    stop = StopOnSignal()
    with stop.installed():  # until saved: a signal now only asks to stop, it cannot cut the saves
        with progress.running():
            result = fit_ensemble(
                net, data, config, replicas, on_epoch=on_epoch, on_step=progress.on_step, stop_requested=stop
            )
        paths, failures = [], []
        for r, member_config in enumerate(result.configs):
            ts = result.member(r)
            member_facts = {
                **facts,
                "config": config_dict(member_config),
                "replica": r,
                "epochs_done": ts.epoch,
                "record": record.metrics.name,
            }
            if result.train_accuracy:
                member_facts.update(
                    train_accuracy=result.train_accuracy[r], val_accuracy=result.val_accuracy[r]
                )
            where, failure = save_or_rescue(
                lambda path, ts=ts, f=member_facts: save_checkpoint(path, net, ts.params, ts.state, f),
                replica_path(out, r),
            )
            paths.append(str(where))
            failures += [failure] if failure else []
    summary = {"model": variant, "checkpoints": paths, "record": str(record.metrics), **result.summary()}
    if result.interrupted:
        summary["interrupted_after_epoch"] = len(result.history)
    if result.diverged:
        summary.update(diverged_in_epoch=result.diverged_in, diverged_members=result.diverged_members)
    finite = [r for r in range(replicas) if r not in result.diverged]
    if result.train_accuracy and finite:
        members = [(net, result.member(r).params, result.member(r).state) for r in finite]
        summary["ensemble_val_accuracy"] = ensemble_accuracy(members, data.val)["ensemble"]
    record.finish(summary)
    for failure in failures:
        typer.echo(f"ptm: error: {printable(failure)}; saved a rescue copy instead (see the list)", err=True)
    if as_json:
        typer.echo(jsonio.dumps(summary))
    if result.diverged and not finite:
        typer.echo(
            f"ptm: error: every replica's loss became NaN or infinite (first in epoch {result.diverged_in}); "
            f"stopped. Saved their last finite weights: {', '.join(paths)}. Try a lower --lr.",
            err=True,
        )
        raise typer.Exit(1)
    if result.interrupted:
        typer.echo(
            f"ptm: interrupted after {len(result.history)} epochs; each replica's weights saved "
            f"({', '.join(paths)}). Ensembles do not resume (ptm sweep does).",
            err=True,
        )
        raise typer.Exit(128 + stop.signal)
    if not as_json:
        for r, path in enumerate(paths):
            diverged = (
                f"  (diverged in epoch {result.diverged[r][0]}: its last finite weights)"
                if r in result.diverged
                else ""
            )
            typer.echo(
                f"replica {r} (seed {result.configs[r].seed}): train {result.train_accuracy[r]:.4f}, "
                f"val {result.val_accuracy[r]:.4f}  {path}{diverged}"
            )
        tr, va = summary["train_accuracy_mean_std"], summary["val_accuracy_mean_std"]
        together = summary["ensemble_val_accuracy"]
        typer.echo(
            f"{variant} x{replicas}: train {tr['mean']:.4f} +/- {tr['std']:.4f}, val {va['mean']:.4f} "
            f"+/- {va['std']:.4f}; the ensemble (mean of probabilities): val {together:.4f} "
            f"({result.seconds:.1f}s, peak memory {result.peak_memory_bytes / 2**20:,.0f} MiB)"
        )
        typer.echo(f"record: {record.metrics} (every replica's curve: ptm plot {record.metrics})")
    if failures or result.diverged:
        raise typer.Exit(1)


def train_worker(arguments: dict) -> None:
    """One `--nproc` worker: `ptm train` with the same arguments, in the launcher's world."""
    run_as_worker(train, arguments)


class _NoRecord(RunRecord):
    """Ranks other than 0 keep no record (rank 0's is the run's)."""

    def start(self, *args, **kwargs) -> None:
        pass

    def log_epoch(self, stats) -> None:
        pass

    def finish(self, result) -> None:
        pass


class _Record(RunRecord):
    """The run's record; a failed append warns once and training goes on (the weights matter more)."""

    broken = False  # set after the first failed append

    def log_epoch(self, stats: EpochStats) -> None:
        if self.broken:
            return
        try:
            super().log_epoch(stats)
        except RecordError as err:
            self.broken = True
            note(f"{err}; training goes on, the record stops here")


def evaluate_checkpoint(
    checkpoints: list[Path] = typer.Argument(
        ..., help="One or more .safetensors files written by ptm; several are also judged as an ensemble."
    ),
    data: str | None = typer.Option(
        None, "--data", "--data-dir", help="Default: the data the (first) checkpoint was trained on."
    ),
    classes: str | None = typer.Option(None, "--classes", help="Default: the classes it was trained on."),
    device: str = Device,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
):
    """Report train and val accuracy of a checkpoint (eval mode), or of several and their ensemble.

    The ensemble predicts the class with the highest mean of the members' probabilities.

    Example: ptm eval runs/net-seed123.safetensors

    Example: ptm eval runs/dropout-seed123-r0.safetensors runs/dropout-seed123-r1.safetensors --json
    """
    with friendly_errors():
        dev = resolve_device(device)
        loaded = load_ensemble(checkpoints, dev)
        first = loaded[0].training
        chosen = parse_classes(classes) or first.get("classes")
        source = data or first.get("data") or first.get("data_dir")
        dataset = load_dataset(source, chosen, dev, notify=note, n_classes=OUTPUTS)
        if len(loaded) == 1:
            ckpt = loaded[0]
            result = {
                "checkpoint": str(checkpoints[0]),
                "model": ckpt.model.name,
                "config": ckpt.model.config,
                "data": dataset.source,
                "train_accuracy": evaluate(ckpt.model, ckpt.params, ckpt.state, dataset.train),
                "val_accuracy": evaluate(ckpt.model, ckpt.params, ckpt.state, dataset.val),
            }
        else:
            members = [(c.model, c.params, c.state) for c in loaded]
            train, val = ensemble_accuracy(members, dataset.train), ensemble_accuracy(members, dataset.val)
            result = {
                "data": dataset.source,
                "members": [
                    {
                        "checkpoint": str(path),
                        "model": c.model.name,
                        "config": c.model.config,
                        "train_accuracy": train["members"][r],
                        "val_accuracy": val["members"][r],
                    }
                    for r, (path, c) in enumerate(zip(checkpoints, loaded, strict=True))
                ],
                "ensemble": {"train_accuracy": train["ensemble"], "val_accuracy": val["ensemble"]},
            }
    if as_json:
        typer.echo(jsonio.dumps(result))
        return
    for row in result.get("members", [result]):
        name = row["model"] if len(loaded) == 1 else row["checkpoint"]
        typer.echo(
            f"{name}: train accuracy {row['train_accuracy']:.4f}, val accuracy {row['val_accuracy']:.4f}"
        )
    if len(loaded) > 1:
        together = result["ensemble"]
        typer.echo(
            f"ensemble of {len(loaded)} (mean of probabilities): train accuracy "
            f"{together['train_accuracy']:.4f}, val accuracy {together['val_accuracy']:.4f}"
        )
