"""`run_sweep`: what `ptm sweep` does, as one call that leaves the same files.

    from ptm_func import run_sweep
    report = run_sweep("net", grid={"lr": [0.01, 0.03]}, seeds=2, epochs=10, device="cpu")
    report.rows        # one per grid point: val/train mean +/- std over seeds, best first
    report.folder      # runs/sweep-net: every member's checkpoint and record, sweep.json, sweep.png

Members train chunk by chunk through `training.fit` (sweep.py); `resume` continues a sweep's
folder where it stopped; in a `world` of ranks each rank trains its share of the members.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ptm_func.catalog import TRAINABLE_NAMES
from ptm_func.data.dataset import Dataset, check_same_data
from ptm_func.data.sources import load_dataset
from ptm_func.errors import PlotUnavailable, SettingsError
from ptm_func.files import atomic
from ptm_func.files.checkpoint import checkpoint_bytes, load_checkpoint
from ptm_func.files.ownership import first_free, owned
from ptm_func.files.records import run_info
from ptm_func.files.tracking import FINISHED, KILLED, Tracking, check_trackers
from ptm_func.nets.references import use_model
from ptm_func.nets.registry import reference_of_model, require_rebuildable
from ptm_func.reports.plot import sweep_chart
from ptm_func.research.ensemble import ensemble_accuracy
from ptm_func.runs import sweep
from ptm_func.runs.arguments import check_common, check_variant_and_world, whole
from ptm_func.runs.reporter import Reporter
from ptm_func.runs.signals import StopOnSignal
from ptm_func.runs.sweep import holds_files, numbered_folders
from ptm_func.text import names, printable
from ptm_func.training.compiling import layout_note, will_compile
from ptm_func.training.config import TrainConfig, book_setup
from ptm_func.training.devices import resolve_device
from ptm_func.training.distributed import World, barrier, join, leave
from ptm_func.training.limits import (
    MAX_MEMBERS,
    PLAN_BYTES_PER_MEMBER,
    batch_for,
    check_step_fits,
    free_disk,
    gib,
)
from ptm_func.training.members import uses_vmap

CHART_NAME = "sweep.png"
DEFAULT_CHUNK = 64  # members per chunk


@dataclass
class SweepRequest:
    """A sweep as planned: what it trains, where, and its description (sweep.json)."""

    variant: str
    net: Any  # the Model
    members: list[sweep.Member]
    swept: list[str]  # the hyperparameters with more than one value
    chunk: int
    folder: Path
    spec: dict[str, Any] = field(default_factory=dict)
    tracking: Tracking = field(default_factory=Tracking)  # --track (rank 0): the sweep's run once it starts
    outputs_given: bool = False  # n_classes was asked for: the data must have that many classes


@dataclass
class SweepReport:
    """What a sweep did: its folder, every member's result, the table, the chart."""

    variant: str
    folder: Path
    swept: list[str]
    source: str  # the data's label
    outcome: sweep.SweepOutcome
    rows: list[dict[str, Any]] = field(default_factory=list)  # sweep.table: best val accuracy first
    chart: Path | None = None
    chart_error: str | None = None  # why no chart was drawn (matplotlib missing)
    chart_failure: str | None = None  # drawing it failed (a full disk): an error, after the results
    signal: int = 0  # the signal that stopped it (0: none)
    main: bool = True  # False on ranks > 0, which report nothing

    @property
    def interrupted(self) -> bool:
        return self.outcome.interrupted


def run_sweep(
    variant: str | None = None,
    *,
    grid: dict[str, list[float]] | None = None,
    seeds: int = 1,
    seed: int = TrainConfig.seed,
    resume: str | Path | None = None,
    out: str | Path | None = None,
    chunk: int = DEFAULT_CHUNK,
    data: str | Path | None = None,
    classes: list[str] | None = None,
    device: str | torch.device = "auto",
    checkpoint_every: int = 0,
    reporter: Reporter | None = None,
    world: World | None = None,
    stop_on_signals: bool = False,
    track: str | Sequence[str] | None = None,
    **settings: Any,
) -> SweepReport:
    """Train every combination of `grid` (TrainConfig field -> values) times `seeds` seeds.

    `settings` (epochs, batch_size, eval_every, compile, members_vmap and model options) apply to
    every member. `out` defaults to runs/sweep-VARIANT (numbered when taken); `resume` continues
    the sweep in that folder as it was planned (give no variant). `track` ("tensorboard",
    "mlflow") mirrors every member's record, MLflow's runs nested in one for the sweep. Raises
    SettingsError for a grid or settings that cannot run, before any work.
    """
    check_common(
        out=out, resume=resume, data=data, classes=classes, device=device, checkpoint_every=checkpoint_every,
        reporter=reporter, stop_on_signals=stop_on_signals, track=track,
    )  # fmt: skip
    for name, value in (("seeds", seeds), ("seed", seed), ("chunk", chunk)):
        whole(name, value)
    check_variant_and_world(variant, world, optional=True)
    variant = None if variant is None else use_model(variant)  # FILE.py:ATTR, module:ATTR: imported
    if grid is not None and not isinstance(grid, dict):
        raise SettingsError(f"grid must be a dict of setting -> list of values, got {type(grid).__name__}")
    reporter = reporter or Reporter()
    if checkpoint_every < 0:
        raise SettingsError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if chunk < 1:
        raise SettingsError(f"--chunk must be >= 1, got {chunk}")
    track = check_trackers(track)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if resume is not None:
        plan = _resume_plan(variant, Path(resume))
        given = [*(grid or {}), *settings] + ["seeds"] * (seeds != 1) + ["seed"] * (seed != TrainConfig.seed)
        if chunk != DEFAULT_CHUNK:  # members regroup by what they saved: any chunk size resumes
            plan.chunk = chunk
        if given:
            reporter.note(f"resuming the sweep as planned in {sweep.SPEC_NAME}; ignoring {', '.join(given)}")
        data = data or plan.spec["data"]
        if classes is not None and list(classes) != plan.spec["classes"]:
            reporter.note(
                f"resuming uses the sweep's classes ({names(plan.spec['classes'])}); ignoring --classes"
            )
        classes = plan.spec["classes"]
    else:
        plan = _new_plan(variant, grid or {}, seeds, seed, chunk, out, settings)
    if plan.folder.suffix in (".safetensors", ".json"):
        raise SettingsError(f"--out {plan.folder} names a file; a sweep writes a folder (give a folder name)")
    if plan.folder.exists() and not plan.folder.is_dir():
        raise SettingsError(f"{plan.folder} is a file: a sweep writes a folder (give another --out)")
    main = world is None or world.is_main
    layout = layout_note(plan.members[0].config, dev, plan.net)  # refused before the folder is made
    if layout and main:
        reporter.note(layout)
    plan.tracking = Tracking(track, reporter.note) if main else Tracking()
    if plan.tracking:
        reporter.message(plan.tracking.describe("MEMBER.tb in the sweep's folder", logdir=plan.folder))
    with _owned_folder(plan, main, numbered=out is None and resume is None) as plan.folder:
        if main and resume is None and holds_files(plan.folder):
            raise SettingsError(f"{plan.folder} holds files already; give another --out, or --resume it")
        return _run(plan, resume, data, classes, dev, seeds, seed, grid, checkpoint_every, reporter, world,
                    stop_on_signals)  # fmt: skip


def _owned_folder(plan: SweepRequest, main: bool, numbered: bool):
    """Hold the sweep's folder (rank 0 only); a default folder skips those in use."""
    if not main:
        return contextlib.nullcontext(plan.folder)
    if numbered:
        return first_free(numbered_folders(plan.folder), holds_files)
    return owned(plan.folder)


def _run(plan, resume, data, classes, dev, seeds, seed, grid, checkpoint_every, reporter, world,
         stop_on_signals) -> SweepReport:  # fmt: skip
    """The sweep, once its folder is its own: check, load, describe, train, report."""
    main = world is None or world.is_main
    if main:
        _check_outputs(plan)
    if world is not None:
        dev = join(world, dev)
    reporter.message(f"loading data ({printable(data or 'auto')}) onto {dev} ...")
    fixed_outputs = resume is not None or plan.outputs_given or plan.net.outputs_fixed
    fixed = plan.net.n_classes if fixed_outputs else None  # the classes must fit them
    dataset = load_dataset(data, classes, dev, notify=reporter.note, n_classes=fixed)
    if resume is not None:
        check_same_data(plan.spec.get("fingerprint"), dataset)
    else:  # one output per class of the data
        plan.net = plan.net.with_classes(len(dataset.classes))
        plan.spec = _spec(plan, dataset, seeds, seed, grid or {})
        if main:
            sweep.write_spec(plan.folder, plan.spec)
    lead, chunk = plan.members[0].config, min(plan.chunk, len(plan.members))
    batch, note = batch_for(lead.batch_size, len(dataset.train))
    if note and main:
        reporter.note(note)
    check_step_fits(
        plan.net, batch, chunk, dev, f"a chunk of {chunk} members",
        together=uses_vmap(lead, dev),
    )  # fmt: skip
    _announce(plan, dataset, dev, reporter)
    plan.tracking = plan.tracking.group(plan.folder.name, _tracked_values(plan), plan.folder)
    stop = StopOnSignal(reporter.message, patient=world is not None)
    with stop.installed() if stop_on_signals else contextlib.nullcontext():
        outcome = _train(plan, dataset, dev, checkpoint_every, reporter, stop, world)
    report = SweepReport(plan.variant, plan.folder, plan.swept, dataset.source, outcome, signal=stop.signal)
    if outcome.interrupted:
        plan.tracking.finish(KILLED)
        return report
    if world is not None:  # every rank's members are saved: rank 0 reports them all
        barrier()
        leave()
        if not main:
            report.main = False
            return report
        outcome.results = [sweep.saved_result(m, sweep.checkpoint_path(plan.folder, m)) for m in plan.members]
    return _finish(report, plan, dataset)


def _resume_plan(variant: str | None, folder: Path) -> SweepRequest:
    if variant in TRAINABLE_NAMES:  # only a user's model is given again (below)
        raise SettingsError("--resume continues the sweep as it was planned: give no MODEL")
    spec, members = sweep.read_spec(folder)
    if variant is not None and variant != spec["variant"]:
        raise SettingsError(f"{folder} sweeps {printable(spec['variant'])!r}, not {variant!r}: give no MODEL")
    again = f"ptm sweep {printable(spec.get('reference') or 'FILE.py:ATTR')} --resume {folder}"
    require_rebuildable(spec["variant"], spec.get("reference"), str(folder), again)
    net, _ = book_setup(spec["variant"], **spec["model_config"])
    return SweepRequest(spec["variant"], net, members, spec["swept"], spec["chunk"], folder, spec)


def _new_plan(variant, grid, seeds, seed, chunk, out, settings) -> SweepRequest:
    if variant is None:
        raise SettingsError("give a MODEL to sweep (or --resume FOLDER)")
    if seeds < 1:
        raise SettingsError(f"--seeds must be >= 1, got {seeds}")
    for key, values in grid.items():
        numbers = isinstance(values, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        )
        if not numbers:
            raise SettingsError(f"grid[{key!r}] must be a list of numbers, got {values!r}")
    count = seeds * math.prod(len(values) for values in grid.values())
    if count > MAX_MEMBERS:
        raise SettingsError(
            f"the grid times --seeds makes {count:,} members; a sweep takes {MAX_MEMBERS:,} at most"
        )
    try:
        net, base = book_setup(variant, **settings)
        members = sweep.grid(variant, base, grid, range(seed, seed + seeds))
    except ValueError as err:
        raise SettingsError(str(err)) from None
    folder = Path(out) if out is not None else Path("runs") / f"sweep-{variant}"
    swept = [k for k, v in grid.items() if len(v) > 1]
    return SweepRequest(variant, net, members, swept, chunk, folder, outputs_given="n_classes" in settings)


def _check_outputs(plan: SweepRequest) -> None:
    """The folder takes sweep.json, the chart and a chunk's checkpoints (raises before training)."""
    for path in (plan.folder / sweep.SPEC_NAME, plan.folder / CHART_NAME):
        atomic.check_writable(path, 1 << 16)
    chunk_bytes = checkpoint_bytes(plan.net) * min(plan.chunk, len(plan.members))
    atomic.check_writable(plan.folder / "probe.safetensors", chunk_bytes)
    need = len(plan.members) * (checkpoint_bytes(plan.net) + PLAN_BYTES_PER_MEMBER)
    if need > free_disk(plan.folder):
        raise SettingsError(
            f"{len(plan.members):,} members need about {gib(need)} of disk in {plan.folder}, "
            f"which has {gib(free_disk(plan.folder))} free"
        )


def _spec(plan: SweepRequest, dataset: Dataset, seeds: int, seed: int, grid) -> dict[str, Any]:
    """The sweep's description, written before training (sweep.json)."""
    return {
        "variant": plan.variant,
        "model_config": dict(plan.net.config),
        **({} if plan.net.builtin else {"reference": reference_of_model(plan.variant)}),
        "swept": plan.swept,
        "grid": dict(grid),
        "seeds": list(range(seed, seed + seeds)),
        "chunk": plan.chunk,
        "data": dataset.source,
        "classes": list(dataset.classes),
        "fingerprint": dataset.fingerprint,
        "members": [sweep.member_entry(m) for m in plan.members],
    }


def _announce(plan: SweepRequest, dataset: Dataset, dev, reporter: Reporter) -> None:
    lead = plan.members[0].config
    how = "one vmapped step" if uses_vmap(lead, dev) else "the step member after member"
    reporter.message(
        f"sweeping {plan.variant} ({plan.net.book_class}): {len(plan.members)} members "
        f"({', '.join(plan.swept) or 'seeds only'}"
        f" x {len(plan.spec['seeds'])} seeds) in chunks of {min(plan.chunk, len(plan.members))} through "
        f"{how}, on {len(dataset.train)} images, classes {names(dataset.classes)} "
        f"({printable(dataset.source)})"
    )
    if will_compile(lead, dev, plan.net):
        reporter.note("compiling the train step (torch.compile): epoch 1 takes longer; --no-compile skips it")


def _train(plan: SweepRequest, dataset, dev, checkpoint_every, reporter, stop, world) -> sweep.SweepOutcome:
    lead = plan.members[0].config
    facts = {
        "variant": plan.variant,
        "classes": list(dataset.classes),
        "data": dataset.source,
        "fingerprint": dataset.fingerprint,
        "device": str(dev),
        "sweep_folder": str(plan.folder),
        **({} if plan.net.builtin else {"reference": reference_of_model(plan.variant)}),
    }
    runner = sweep.SweepRun(
        plan.net,
        dataset,
        plan.folder,
        run_info(plan.variant, plan.net, lead, dataset, dev),
        facts,
        dev,
        save_every=checkpoint_every,
        on_chunk=lambda n, total, todo: reporter.message(
            f"chunk {n}/{total}: {len(todo)} members ({todo[0].name} ...)"
        ),
        on_epoch=lambda stats, ts: reporter.epoch(stats),
        on_step=reporter.step,
        on_note=reporter.note,
        stop_requested=stop,
        tracking=plan.tracking,
    )
    groups = runner.plan(plan.members, plan.chunk, *((world.rank, world.size) if world else ()))
    if world is not None:
        barrier()  # every rank has read what was saved before any rank saves again
    with reporter.running(lead.epochs):
        outcome = runner.run(groups)
    if world is None and not outcome.interrupted:
        outcome.results = [sweep.saved_result(m, sweep.checkpoint_path(plan.folder, m)) for m in plan.members]
    return outcome


def _finish(report: SweepReport, plan: SweepRequest, dataset: Dataset) -> SweepReport:
    """The table (with each grid point's ensemble of seeds) and results into sweep.json, and the chart."""
    report.rows = sweep.table(report.outcome.results, plan.swept)
    _add_ensembles(report.rows, report.outcome.results, plan.swept, dataset)
    plan.spec["results"] = {"members": report.outcome.results, "table": report.rows}
    sweep.write_spec(plan.folder, plan.spec)
    try:
        epochs = plan.members[0].config.epochs if plan.members else None
        title = f"sweep of {plan.variant}"  # the chart adds what it draws
        report.chart = sweep_chart(report.rows, plan.swept, plan.folder / CHART_NAME, title, epochs=epochs)
    except PlotUnavailable as err:
        report.chart_error = str(err)
    except (OSError, ValueError) as err:
        report.chart_failure = f"cannot draw {plan.folder / CHART_NAME}: {err}"
    _finish_tracking(plan, report)
    return report


def _tracked_values(plan: SweepRequest) -> dict[str, Any]:
    """The sweep's own params in a tracker (its members have theirs)."""
    keys = ("variant", "swept", "grid", "seeds", "chunk", "data", "classes")
    return {**{k: plan.spec.get(k) for k in keys}, "members": len(plan.members)}


def _finish_tracking(plan: SweepRequest, report: SweepReport) -> None:
    """Mirror the members this process did not train (other ranks', an earlier run's) from their
    records, then end the sweep's run with sweep.json and the chart."""
    for member in plan.members:
        if member.name not in plan.tracking.opened:
            plan.tracking.replay(sweep.checkpoint_path(plan.folder, member))
    plan.tracking.finish(FINISHED, [plan.folder / sweep.SPEC_NAME, report.chart])


def _add_ensembles(rows, results, swept, dataset: Dataset) -> None:
    """`ensemble_val`: the val accuracy of the mean of probabilities of a grid point's finished
    seeds (rows of two or more)."""
    for row in rows:
        point = [r for r in results if all(r[k] == row[k] for k in swept)]
        finished = [
            r["checkpoint"] for r in point if r["val_accuracy"] is not None and r["diverged_in_epoch"] is None
        ]
        if len(finished) >= 2:
            members = [load_checkpoint(path, dataset.val.images.device) for path in finished]
            together = [(m.model, m.params, m.state) for m in members]
            row["ensemble_val"] = ensemble_accuracy(together, dataset.val)["ensemble"]
