"""`run_training`: what `ptm train` does, as one call that leaves the same files.

    from ptm_func import run_training
    outcome = run_training("net", epochs=20, device="cpu")   # runs/net-seed123.safetensors, ...
    outcome.result.val_accuracy, outcome.checkpoint, outcome.record

A run checks its outputs before anything else, loads the data, writes its record as epochs
finish, trains with `training.fit`, saves (or rescues) the checkpoint and the state to resume
from, and can be resumed exactly where it stopped. `--replicas` (K seeds at once) is in
`replicas.py` (the sweep machinery, one way to train several seeds).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ptm_func.data.dataset import Dataset, check_same_data
from ptm_func.data.sources import load_dataset
from ptm_func.errors import CheckpointError, RecordError, SettingsError
from ptm_func.files import atomic
from ptm_func.files.checkpoint import checkpoint_bytes, save_or_rescue
from ptm_func.files.ownership import first_free, owned
from ptm_func.files.records import RunRecord, numbered_run_paths, run_info, run_path_used
from ptm_func.files.resume import load_run, save_run
from ptm_func.files.tracking import Tracking, check_trackers
from ptm_func.nets.references import use_model
from ptm_func.nets.registry import Model, reference_of_model
from ptm_func.runs.arguments import check_common, check_variant_and_world, flag, whole
from ptm_func.runs.replicas import ReplicasOutcome, run_replicas
from ptm_func.runs.reporter import Reporter
from ptm_func.runs.signals import StopOnSignal
from ptm_func.text import names, printable
from ptm_func.training.compiling import layout_note, will_compile
from ptm_func.training.config import TrainConfig, book_setup
from ptm_func.training.devices import resolve_device
from ptm_func.training.distributed import World, join, leave
from ptm_func.training.limits import batch_for, check_step_fits
from ptm_func.training.loop import fit
from ptm_func.training.state import EpochStats, TrainResult, TrainState

# What --resume may change: everything else is the saved run's.
RESUME_ADJUSTABLE = ("epochs", "compile", "eval_every")


@dataclass
class RunOutcome:
    """What a run did and where it left its files."""

    variant: str
    result: TrainResult
    checkpoint: Path  # the weights (a rescue file when the save to `out` failed)
    record: Path  # one JSON line per epoch
    save_failed: str | None = None  # why `out` could not be written
    signal: int = 0  # the signal that stopped the run (0: none)
    summary: dict[str, Any] = field(default_factory=dict)  # what `ptm train --json` prints

    @property
    def position(self) -> str:
        """Where the run stands, numbered as the epoch lines are: `epoch 3, step 37`."""
        return position(self.result.train_state)


@dataclass
class _Plan:
    """A run as planned: model, config, where it starts and saves, and the data to load."""

    variant: str
    net: Model
    config: TrainConfig
    out: Path
    device: torch.device
    data: str | Path | None
    classes: list[str] | None
    start: TrainState | None = None
    saved: dict[str, Any] = field(default_factory=dict)  # the resumed run's facts
    checkpoint_every: int = 0  # also save every N epochs
    numbered: bool = False  # out is a default name: take the first of NAME, NAME-2, ... that is free
    tracking: Tracking = field(default_factory=Tracking)  # --track: mirrors the record
    outputs_given: bool = False  # n_classes was asked for: the data must have that many classes


def run_training(
    variant: str,
    *,
    data: str | Path | None = None,
    classes: list[str] | None = None,
    device: str | torch.device = "auto",
    out: str | Path | None = None,
    force: bool = False,
    resume: str | Path | None = None,
    checkpoint_every: int = 0,
    replicas: int = 1,
    book_quirks: bool = False,
    reporter: Reporter | None = None,
    world: World | None = None,
    stop_on_signals: bool = False,
    track: str | Sequence[str] | None = None,
    **settings: Any,
) -> RunOutcome | ReplicasOutcome:
    """Train `variant` (net, l2, ..., resdeep) as `ptm train` does and leave the same files.

    `settings` are TrainConfig fields (epochs, lr, seed, ...) and model options (n_chans1,
    n_blocks, tied) that differ from the book's. `out` defaults to
    runs/VARIANT-seedSEED.safetensors (numbered -2, -3, ... when taken, unless `force`); beside
    it go NAME.train.safetensors, NAME.run.json and NAME.metrics.jsonl. `resume` continues a
    saved run with its settings (RESUME_ADJUSTABLE may change). `replicas` trains K seeds as
    `ptm sweep --seeds K` does, into a folder (`out`; `resume` that folder to continue), and
    returns a ReplicasOutcome. `stop_on_signals`: Ctrl-C and SIGTERM stop after the step, and
    the run saves (main thread only). In a `world` of ranks, rank 0 writes. `track` mirrors the
    record into trackers ("tensorboard", "mlflow": files/tracking.py; rank 0 only). Raises
    SettingsError for settings that cannot run, before any work.
    """
    check_common(
        out=out, resume=resume, data=data, classes=classes, device=device, checkpoint_every=checkpoint_every,
        reporter=reporter, stop_on_signals=stop_on_signals, track=track,
    )  # fmt: skip
    check_variant_and_world(variant, world)
    variant = use_model(variant)  # FILE.py:ATTR, module:ATTR: imported and registered; a name as it is
    whole("replicas", replicas)
    flag("force", force)
    flag("book_quirks", book_quirks)
    reporter = reporter or Reporter()
    _check_request(out, checkpoint_every, replicas, resume, world, book_quirks)
    track = check_trackers(track)
    if replicas > 1 or (resume is not None and Path(resume).is_dir()):
        return run_replicas(
            variant, replicas, out=out, resume=resume, data=data, classes=classes, device=device,
            checkpoint_every=checkpoint_every, reporter=reporter, stop_on_signals=stop_on_signals,
            track=track, **settings,
        )  # fmt: skip
    if book_quirks:
        settings = {**settings, "shuffle": False, "eval_train_mode": True}
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if world is not None:
        dev = join(world, dev)
    main = world is None or world.is_main  # the rank that prints and writes
    with contextlib.ExitStack() as held:  # one process at a time writes an output
        if main and resume is not None:  # before reading it: a save in flight is not ours to finish
            if not Path(resume).parent.is_dir():  # the lock would make its folders; nothing is there
                raise CheckpointError(f"no checkpoint at {resume}")
            held.enter_context(owned(Path(resume)))
        plan = _plan(variant, settings, dev, data, classes, out, force, resume, reporter)
        layout = layout_note(plan.config, plan.device, plan.net)  # refused before any output is held
        if layout and main:
            reporter.note(layout)
        plan.checkpoint_every = checkpoint_every
        plan.tracking = Tracking(track, reporter.note) if main else Tracking()
        if plan.tracking:
            reporter.message(plan.tracking.describe(logdir=plan.out.parent))
        if resume is None or plan.out != Path(resume):
            plan.out = held.enter_context(_owned_output(plan, main))
            if main and not plan.numbered and run_path_used(plan.out):  # --out (or force) names it
                reporter.note(f"{printable(plan.out)} holds a run already: this run replaces it")
        return _run(plan, resume, reporter, world, main, stop_on_signals)


def _stored_order_note(config: TrainConfig, dataset: Dataset) -> str | None:
    """Unshuffled (--book-quirks) training on data stored class by class learns little: say so."""
    labels = dataset.train.labels
    if config.shuffle or len(labels) < 2 or not bool((labels[1:] >= labels[:-1]).all()):
        return None
    return (
        f"--book-quirks trains unshuffled, in the stored order of {dataset.source}, which is class by "
        "class: each epoch shows the net one class, then the next, and it may learn little. The "
        "notebook's CIFAR-10 mixes the classes in its stored order (--data cifar10)"
    )


def _owned_output(plan: _Plan, main: bool):
    """Hold the run's output (rank 0 only); a new run's default name skips those taken or held."""
    if not main:
        return contextlib.nullcontext(plan.out)
    if plan.numbered:
        return first_free(numbered_run_paths(plan.out), run_path_used)
    return owned(plan.out)


def _run(plan: _Plan, resume, reporter, world, main: bool, stop_on_signals: bool) -> RunOutcome:
    """The run, once its output is its own: check, load, record, train, save."""
    variant = plan.variant
    if main:
        atomic.check_writable(plan.out, checkpoint_bytes(plan.net))
        atomic.remove_stale_temps(plan.out)
    dataset = _load_data(plan, reporter)
    batch, note = batch_for(plan.config.batch_size, len(dataset.train))
    for said in (note, _stored_order_note(plan.config, dataset)):
        if said and main:
            reporter.note(said)
    check_step_fits(plan.net, batch, 1, plan.device, f"a step on batches of {batch}")
    facts = {
        "variant": variant,
        "classes": list(dataset.classes),
        "data": dataset.source,
        "fingerprint": dataset.fingerprint,
        "device": str(plan.device),
        **({} if plan.net.builtin else {"reference": reference_of_model(variant)}),
    }
    _announce(plan, dataset, world, reporter)
    record = WarningRecord(plan.out, reporter.note, plan.tracking) if main else NoRecord(plan.out)
    info = run_info(variant, plan.net, plan.config, dataset, plan.device)
    record.start(info, resumed_from=resume, at_epoch=plan.start.epoch if plan.start else 0)
    stop = StopOnSignal(reporter.message, patient=world is not None)
    with stop.installed() if stop_on_signals else contextlib.nullcontext():
        # a signal now only asks to stop: it cannot cut a save
        outcome = _train(plan, dataset, facts, record, reporter, stop, main, world)
    if world is not None:
        leave()
    record.finish(
        {**outcome.result.summary(), **status(outcome.result), "checkpoint": str(outcome.checkpoint)}
    )
    return outcome


def _check_request(out, checkpoint_every, replicas, resume, world, book_quirks) -> None:
    """Refuse what cannot run, before anything is read or written."""
    if world is not None and (replicas > 1 or (resume is not None and Path(resume).is_dir())):
        raise SettingsError("--replicas with several ranks: split members over ranks with ptm sweep --nproc")
    if world is not None and book_quirks:
        raise SettingsError("--book-quirks validates batch by batch in train mode: one process only")
    if checkpoint_every < 0:
        raise SettingsError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if replicas < 1:
        raise SettingsError(f"--replicas must be >= 1, got {replicas}")
    if replicas > 1 and book_quirks:
        raise SettingsError("--book-quirks is the book's single run: not with --replicas")
    if out is not None and replicas == 1 and Path(out).suffix != ".safetensors":
        raise SettingsError(f"--out must name a .safetensors file, got {out}")


def _plan(variant, settings, dev, data, classes, out, force, resume, reporter) -> _Plan:
    """The model, config and paths of a new run, or of the saved run `resume` continues."""
    out = None if out is None else Path(out)
    if resume is not None:
        net, config, start, saved = _resume_plan(variant, Path(resume), settings, dev, reporter)
        data = data or saved.get("data") or saved.get("data_dir")
        if classes is not None and saved.get("classes") and list(classes) != saved["classes"]:
            reporter.note(
                f"resuming uses the saved run's classes ({names(saved['classes'])}); ignoring --classes"
            )
        classes = saved.get("classes") or classes
        return _Plan(variant, net, config, out or Path(resume), dev, data, classes, start, saved)
    try:
        net, config = book_setup(variant, **settings)
    except ValueError as err:
        raise SettingsError(str(err)) from None
    default = Path("runs") / f"{variant}-seed{config.seed}.safetensors"
    plan = _Plan(variant, net, config, out or default, dev, data, classes)
    plan.numbered = out is None and not force
    plan.outputs_given = "n_classes" in settings
    return plan


def _resume_plan(variant, resume: Path, settings, dev, reporter) -> tuple:
    """The saved run's model, config (RESUME_ADJUSTABLE may change), position and facts."""
    ckpt, start, config = load_run(resume, dev)
    saved = ckpt.training
    if saved.get("variant") != variant:
        raise SettingsError(f"{resume} is a {printable(saved.get('variant'))!r} run, not {variant!r}")
    given, trained = reference_of_model(variant), saved.get("reference")
    if given and trained and given != trained:
        reporter.note(f"{resume} was trained as {printable(trained)}; resuming it as {printable(given)}")
    saved_values = {**asdict(config), **ckpt.model.config}
    ignored = sorted(k for k in set(settings) - set(RESUME_ADJUSTABLE) if settings[k] != saved_values.get(k))
    if ignored:
        reporter.note(f"resuming uses the saved settings; ignoring {', '.join(ignored)}")
    try:
        config = replace(config, **{k: settings[k] for k in RESUME_ADJUSTABLE if k in settings})
    except ValueError as err:
        raise SettingsError(str(err)) from None
    if start.epoch >= config.epochs:
        raise SettingsError(
            f"{resume} has trained {start.epoch} of {config.epochs} epochs already; "
            f"give --epochs above {start.epoch} to train on"
        )
    return ckpt.model, config, start, saved


def _load_data(plan: _Plan, reporter: Reporter) -> Dataset:
    """The run's data on its device; a resumed run's must be the data it was trained on."""
    reporter.message(f"loading data ({printable(plan.data or 'auto')}) onto {plan.device} ...")
    fixed_outputs = plan.start is not None or plan.outputs_given or plan.net.outputs_fixed
    fixed = plan.net.n_classes if fixed_outputs else None  # the classes must fit them
    dataset = load_dataset(plan.data, plan.classes, plan.device, notify=reporter.note, n_classes=fixed)
    if plan.start is not None:
        check_same_data(plan.saved.get("fingerprint"), dataset)
    else:  # a new run's model has one output per class of its data
        plan.net = plan.net.with_classes(len(dataset.classes))
    return dataset


def _announce(plan: _Plan, dataset: Dataset, world: World | None, reporter: Reporter) -> None:
    where = f" from {position(plan.start)}" if plan.start else ""
    reporter.message(
        f"training {plan.variant} ({plan.net.book_class}, {plan.net.config}){where} on {len(dataset.train)} "
        f"images, validating on {len(dataset.val)}, classes {names(dataset.classes)} "
        f"({printable(dataset.source)})"
    )
    if will_compile(plan.config, plan.device, plan.net):
        reporter.note("compiling the train step (torch.compile): epoch 1 takes longer; --no-compile skips it")
    if world is not None:
        reporter.note(
            f"{world.size} ranks, each training its slice of every batch of {plan.config.batch_size}"
        )


def _train(plan: _Plan, dataset, facts, record, reporter, stop, main: bool, world) -> RunOutcome:
    """fit, then save (or rescue) the weights and the state to resume from."""
    net, config, out, every = plan.net, plan.config, plan.out, plan.checkpoint_every

    def on_epoch(stats: EpochStats, ts: TrainState) -> None:
        reporter.epoch(stats)
        record.log_epoch(stats)
        if main and every and ts.epoch % every == 0 and ts.epoch < config.epochs:
            try:
                save_run(out, net, ts, config, facts)
            except CheckpointError as err:  # the final save tries again, with a rescue
                reporter.note(f"{err}; training goes on")

    with reporter.running(config.epochs, plan.start.epoch if plan.start else 0):
        result = fit(
            net,
            dataset,
            config,
            start=plan.start,
            on_epoch=on_epoch,
            on_step=reporter.step,
            stop_requested=stop,
            world=world,
        )
    ts = result.train_state
    saved_to, failure = out, None
    if main:
        saved_to, failure = save_or_rescue(
            lambda path: save_run(path, net, ts, config, {**facts, **result.summary()}), out
        )
    summary = {
        "model": plan.variant,
        "checkpoint": str(saved_to),
        "record": str(record.metrics),
        **status(result),
    }
    summary.update(result.summary())
    if failure:
        summary["save_failed"] = failure
    return RunOutcome(plan.variant, result, saved_to, record.metrics, failure, stop.signal, summary)


def position(ts: TrainState) -> str:
    """Where a run stands, numbered as the epoch lines are: `epoch 3, step 37`."""
    return f"epoch {ts.epoch + 1}, step {ts.step_in_epoch}"


def status(result: TrainResult) -> dict[str, Any]:
    """How a run stopped, for its JSON and record: nothing when it finished."""
    ts = result.train_state
    at = {"epoch": ts.epoch + 1, "step": ts.step_in_epoch}
    if result.diverged_in is not None:
        return {"diverged_in_epoch": result.diverged_in, "saved_at": at}
    return {"interrupted_at": at} if result.interrupted else {}


class NoRecord(RunRecord):
    """Ranks other than 0 keep no record (rank 0's is the run's)."""

    def start(self, *args, **kwargs) -> None:
        pass

    def log_epoch(self, stats) -> None:
        pass

    def finish(self, result) -> None:
        pass


class WarningRecord(RunRecord):
    """The run's record; a failed append warns once and training goes on (the weights matter more)."""

    def __init__(self, checkpoint, warn, tracking=None):
        super().__init__(checkpoint, tracking)
        self.warn, self.broken = warn, False

    def log_epoch(self, stats: EpochStats) -> None:
        if self.broken:
            return
        try:
            super().log_epoch(stats)
        except RecordError as err:
            self.broken = True
            self.warn(f"{err}; training goes on, the record stops here")
