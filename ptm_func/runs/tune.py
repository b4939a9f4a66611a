"""`run_tune`: what `ptm tune` does, as one call: a pruned Optuna search trained as members.

    from ptm_func import run_tune
    report = run_tune("net", space={"lr": "1e-3:1e-1:log", "momentum": "0:0.95"},
                      trials=16, epochs=10, batch=4, device="cpu")
    report.rows        # the best trials: settings, val accuracy, epochs reached
    report.best_file   # runs/tune-net/best.json: `ptm train net --config runs/tune-net/best.json`

What the storage holds is read back by study_report.py (show_study, plot_study).

The study lives in Optuna's storage (default runs/studies.journal; a postgresql:// URL for
several machines); rerunning the same call continues it, and any number of processes may work
on it at once. Each worker claims up to `batch` trials, trains them as members of one run
(`training.fit` through the sweep machinery: each trial leaves the checkpoint and record its
`ptm train` would), reports each epoch's val accuracy to the pruner in trial order, and takes
a pruned trial out of the step at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ptm_func.data.dataset import Dataset
from ptm_func.data.sources import load_dataset
from ptm_func.errors import SettingsError
from ptm_func.files import atomic, jsonio
from ptm_func.files.records import run_info
from ptm_func.files.tracking import FINISHED, KILLED, Tracking, check_trackers
from ptm_func.nets.references import use_model
from ptm_func.nets.registry import reference_of_model
from ptm_func.runs import studies, sweep
from ptm_func.runs import tune_agreement as agreed
from ptm_func.runs.arguments import check_common, whole
from ptm_func.runs.reporter import Reporter
from ptm_func.runs.search_space import SHAPES, Space, shape_of
from ptm_func.runs.signals import StopOnSignal
from ptm_func.runs.study_report import DEFAULT_STORAGE, TuneReport, summarize
from ptm_func.training.config import TrainConfig, book_setup
from ptm_func.training.devices import resolve_device

BEST_NAME = "best.json"
POLL_SECONDS = 2.0  # a worker with nothing to claim waits for the others' trials this long


@dataclass
class _Search:
    """A study as this worker runs it."""

    variant: str
    space: Space
    settings: dict[str, Any]  # fixed settings: TrainConfig fields and model options
    study: Any
    budget: int
    batch: int
    folder: Path
    reporter: Reporter
    sampler: tuple[str, int, dict | None] = ("tpe", 0, None)  # name, seed, grid
    dataset: Dataset | None = None
    device: Any = None
    stop: Any = None
    tracking: Tracking = field(default_factory=Tracking)  # --track: each trial's record mirrored
    data: str | None = None  # --data as `ptm train` takes it again (a path made absolute)


def run_tune(
    variant: str | None = None,
    *,
    space: dict[str, str] | None = None,
    trials: int = 20,
    batch: int | None = None,
    sampler: str = "tpe",
    pruner: str = "halving",
    min_epochs: int = 1,
    seed: int = 0,
    storage: str | None = None,
    study: str | None = None,
    out: str | Path | None = None,
    data: str | Path | None = None,
    classes: list[str] | None = None,
    device: str | torch.device = "auto",
    reporter: Reporter | None = None,
    stop_on_signals: bool = False,
    track: str | Sequence[str] | None = None,
    **settings: Any,
) -> TuneReport:
    """Search `space` (setting -> 'LOW:HIGH[:log]' or 'a,b,c') for `variant` with Optuna.

    `trials` is the study's budget (complete + pruned trials), shared by every worker of the
    study; `batch` trials train at once as members (default: 8 on CUDA, 4 on CPU, where they
    loop). `settings` (epochs, batch_size, ...) are fixed for every trial. `track`
    ("tensorboard", "mlflow") mirrors every trial's record, nested in one run per worker, as
    a sweep's members are. Raises SettingsError before any training for settings that cannot
    run, StudyStorageError for a storage that cannot be opened.
    """
    check_common(
        out=out, resume=None, data=data, classes=classes, device=device, checkpoint_every=0,
        reporter=reporter, stop_on_signals=stop_on_signals, track=track,
    )  # fmt: skip
    track = check_trackers(track)
    for name, value in (("trials", trials), ("min_epochs", min_epochs), ("seed", seed)):
        whole(name, value)
    if not 0 <= seed < 2**32:
        raise SettingsError(f"--seed must be in 0..2**32-1 (the sampler's), got {seed}")
    if variant is None:
        raise SettingsError("give a MODEL to tune")
    variant = use_model(variant)
    reporter = reporter or Reporter()
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    search = _plan(variant, space or {}, trials, batch, sampler, pruner, min_epochs, seed, storage, study,
                   out, dev, reporter, settings)  # fmt: skip
    search.stop = StopOnSignal(reporter.message)
    if track:
        tracking = Tracking(track, reporter.note)
        reporter.message(tracking.describe("trial-NNNN.tb in the study's folder", logdir=search.folder))
        values = {"study": search.study.study_name, "variant": variant, "space": search.space.describe()}
        search.tracking = tracking.group(search.folder.name, values, search.folder)
    try:
        with search.stop.installed() if stop_on_signals else contextlib.nullcontext():
            search.dataset = load_dataset(data, classes, dev, notify=reporter.note)
            search.device = dev
            search.data = agreed.data_argument(data)
            agreed.check_same_data(search.study, search.dataset)
            trained = _work(search)
    except BaseException:  # the worker's tracked run ends, as killed, with the error
        search.tracking.finish(KILLED)
        raise
    search.tracking.finish(KILLED if search.stop() else FINISHED)
    report = summarize(search.study, variant, storage or str(DEFAULT_STORAGE), search.folder)
    report.trained_here, report.interrupted, report.signal = (
        trained,
        search.stop.signal != 0,
        search.stop.signal,
    )
    if report.rows:
        report.best_file = _write_best(search, report.rows[0])
        model = search.variant if search.variant in book_names() else reference_of_model(search.variant)
        report.retrain = f"ptm train {model} --config {report.best_file}"
    return report


def _plan(variant, texts, trials, batch, sampler, pruner, min_epochs, seed, storage, study, out, dev,
          reporter, settings) -> _Search:  # fmt: skip
    """Check everything, then open (or create) the study: no training before this passes."""
    space = Space.parse(texts)
    searched = {d.name for d in space.dimensions} | set(space.fixed)
    clash = sorted(searched & set(settings))
    if clash:
        raise SettingsError(f"{', '.join(clash)} given both as fixed settings and in the search space")
    if trials < 1:
        raise SettingsError(f"--trials must be >= 1, got {trials}")
    batch = batch if batch is not None else (8 if dev.type == "cuda" else 4)
    whole("batch", batch)
    if batch < 1:
        raise SettingsError(f"--batch must be >= 1, got {batch}")
    fixed = {**settings, "eval_every": 1}  # the pruner reads every epoch's val accuracy
    try:  # every value of the space with the fixed settings: one TrainConfig per corner
        for corner in _corners(space):
            book_setup(variant, **fixed, **space.fixed, **corner)
    except ValueError as err:
        raise SettingsError(str(err)) from None
    _, lead = book_setup(variant, **fixed, **space.fixed, **_corners(space)[0])
    if lead.epochs < 1:
        raise SettingsError(f"--epochs must be >= 1 (the pruner's resource), got {lead.epochs}")
    if min_epochs < 1 or min_epochs > max(lead.epochs, 1):
        raise SettingsError(f"--min-epochs must be in 1..{lead.epochs} (the epochs), got {min_epochs}")
    grid = space.grid() if sampler == "grid" else None
    if grid is not None and trials > space.grid_size():
        raise SettingsError(
            f"--sampler grid has {space.grid_size()} points; ask --trials {space.grid_size()}"
        )
    name = study or variant
    if not agreed.STUDY_NAME.fullmatch(name):
        raise SettingsError(f"--study takes letters, digits, '.', '_' and '-' (200 at most), got {name!r}")
    folder = Path(out) if out is not None else Path("runs") / f"tune-{name}"
    if folder.exists() and not folder.is_dir():
        raise SettingsError(f"{folder} is a file: a study's trials go in a folder (give another --out)")
    atomic.check_writable(folder / BEST_NAME, 1 << 16)
    agreed.claim_folder(folder, name, storage)
    created = studies.open_study(
        name, storage, DEFAULT_STORAGE, studies.make_sampler(sampler, seed, grid),
        studies.make_pruner(pruner, lead.epochs, min_epochs),
    )  # fmt: skip
    described = _description(variant, space, fixed, sampler, pruner, min_epochs, seed, folder)
    agreed.check_same_study(created, name, described)
    reporter.message(
        f"study {name!r} in {studies.safe_url(storage or str(DEFAULT_STORAGE))}: "
        f"{trials} trials of {variant} "
        f"({space.describe()}), {lead.epochs} epochs each, {batch} at a time, sampler {sampler}, "
        f"pruner {pruner}; trials in {folder}"
    )
    return _Search(variant, space, fixed, created, trials, batch, folder, reporter, (sampler, seed, grid))


def _corners(space: Space) -> list[dict[str, Any]]:
    """The lowest and highest value of every dimension (checks a space's ends all train)."""
    ends = [
        (min(d.choices), max(d.choices)) if d.choices else (d.low or 0.0, d.high or 0.0)
        for d in space.dimensions
    ]
    return [
        {d.name: int(end[i]) if d.whole else end[i] for d, end in zip(space.dimensions, ends, strict=True)}
        for i in (0, 1)
    ]


def _description(variant, space, fixed, sampler, pruner, min_epochs, seed, folder) -> dict[str, Any]:
    return {
        "variant": variant,
        **({} if variant in book_names() else {"reference": reference_of_model(variant)}),
        "space": space.to_json(),
        "settings": fixed,
        "sampler": sampler,
        "pruner": pruner,
        "min_epochs": min_epochs,
        "seed": seed,
        "folder": str(folder),
    }


def book_names() -> tuple[str, ...]:
    from ptm_func.catalog import TRAINABLE_NAMES

    return TRAINABLE_NAMES


def _work(search: _Search) -> int:
    """Claim, train and tell trials until the study has its budget; returns how many trained here."""
    trained = 0
    while not search.stop():
        studies.reap_dead(search.study, search.reporter.note)
        claimed = studies.claim(search.study, search.batch, search.budget)
        if not claimed:
            running = [t for t in studies.counted(search.study) if not t.state.is_finished()]
            if len(studies.finished(search.study)) >= search.budget or not running:
                return trained
            time.sleep(POLL_SECONDS)  # other workers' trials: one may die and need retrying
            continue
        for group in _by_shape(search, claimed):
            trained += _train_group(search, group)
            if search.stop():
                break
    return trained


def _by_shape(search: _Search, claimed: Sequence[Any]) -> list[list[tuple[Any, dict[str, Any]]]]:
    """Each claimed trial with its settings, grouped by model shape (they train together)."""
    groups: dict[tuple, list] = {}
    name, seed, grid = search.sampler
    for trial in claimed:  # each trial's own sampler seed: workers asking at once draw apart
        if name in studies.RESEEDED:  # (a grid's or a QMC sequence's order follows one seed)
            search.study.sampler = studies.make_sampler(name, studies.trial_seed(seed, trial.number), grid)
        values = search.space.sample(trial)
        groups.setdefault(shape_of(values), []).append((trial, values))
    return list(groups.values())


def _train_group(search: _Search, group: list[tuple[Any, dict[str, Any]]]) -> int:
    """Train one group of trials as members; tell each one how it ended."""
    op = studies.optuna()
    assert search.dataset is not None
    shape = dict(shape_of(group[0][1]))
    net, _ = book_setup(search.variant, **search.settings, **shape)
    net = net.with_classes(len(search.dataset.classes))
    members = []
    for trial, values in group:
        _, config = book_setup(search.variant, **search.settings, **_config_values(values), **shape)
        members.append(
            sweep.Member(f"trial-{trial.number:04d}", config, {k: float(v) for k, v in values.items()})
        )
    search.folder.mkdir(parents=True, exist_ok=True)
    trials = [t for t, _ in group]
    pruned: dict[int, int] = {}
    runner = _runner(search, net, members, _pruning(trials, pruned))
    search.reporter.message(
        "trials " + ", ".join(str(t.number) for t in trials) + ": "
        + "; ".join(_settings_text(v) for _, v in group)
    )  # fmt: skip
    with studies.heartbeats(search.study, trials), search.reporter.running(members[0].config.epochs):
        try:
            outcome = runner.run([members])
        except BaseException:
            _abandon(search.study, trials, "failed: the worker stopped with an error")
            raise
    if outcome.interrupted:
        _abandon(search.study, trials, "interrupted")
        return 0
    for r, (trial, member) in enumerate(zip(trials, members, strict=True)):
        path = sweep.checkpoint_path(search.folder, member)
        result = sweep.saved_result(member, path)
        trial.set_user_attr("checkpoint", str(path))
        trial.set_user_attr("record", str(path.with_suffix("").with_suffix(".metrics.jsonl")))
        trial.set_user_attr("epochs", pruned.get(r, member.config.epochs))
        if result["diverged_in_epoch"] is not None:  # a loss gone NaN: stopped there, as pruned
            trial.set_user_attr("diverged_in_epoch", result["diverged_in_epoch"])
            trial.set_user_attr("epochs", result["diverged_in_epoch"])
            search.study.tell(trial, state=op.trial.TrialState.PRUNED)
        elif r in pruned or result["val_accuracy"] is None:
            search.study.tell(trial, state=op.trial.TrialState.PRUNED)
        else:
            trial.set_user_attr("train_accuracy", result["train_accuracy"])
            search.study.tell(trial, result["val_accuracy"])
    return len(trials)


def _config_values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in SHAPES}


def _settings_text(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _pruning(trials: Sequence[Any], pruned: dict[int, int]) -> Callable:
    """fit's stop_members: report each trial's val accuracy, in trial order, and prune."""

    def stop_members(stats, ts) -> set[int]:
        stop = set()
        values = (stats.members or {}).get("val_accuracy") or []
        for r, trial in enumerate(trials):
            if r in pruned or r >= len(values) or values[r] is None:
                continue
            trial.report(values[r], stats.epoch)
            if trial.should_prune():
                pruned[r] = stats.epoch
                stop.add(r)
        return stop

    return stop_members


def _runner(search: _Search, net, members: list[sweep.Member], stop_members: Callable) -> sweep.SweepRun:
    """The sweep machinery over one group: each trial's checkpoint and record, as ptm train's."""
    assert search.dataset is not None
    lead = members[0].config
    facts = {
        "variant": search.variant,
        "classes": list(search.dataset.classes),
        "data": search.dataset.source,
        "fingerprint": search.dataset.fingerprint,
        "device": str(search.device),
        "study": search.study.study_name,
        **({} if net.builtin else {"reference": reference_of_model(search.variant)}),
    }
    info = run_info(search.variant, net, lead, search.dataset, search.device)
    return sweep.SweepRun(
        net, search.dataset, search.folder, info, facts, search.device,
        on_epoch=lambda stats, ts: search.reporter.epoch(stats),
        on_step=search.reporter.step, on_note=search.reporter.note, stop_requested=search.stop,
        stop_members=stop_members, tracking=search.tracking,
    )  # fmt: skip


def _abandon(study: Any, trials: Sequence[Any], why: str) -> None:
    """Fail trials this worker cannot finish and enqueue their settings again (the study
    continues them when rerun)."""
    op = studies.optuna()
    for trial in trials:
        with contextlib.suppress(Exception):  # a finished trial; a storage gone with the error
            trial.set_user_attr("ended", why)
            study.tell(trial, state=op.trial.TrialState.FAIL)
            study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})


def _write_best(search: _Search, best: dict[str, Any]) -> Path:
    """best.json: the best trial's settings, as `ptm train --config` takes them."""
    params = {k: best[k] for k in search.space.names() if k in best}
    shape = dict(shape_of(params))
    given = {**search.settings, **search.space.fixed, **params}
    _, config = book_setup(search.variant, **given)
    trained = set(TrainConfig.__dataclass_fields__)
    settings = {**asdict(config), **shape, **{k: v for k, v in given.items() if k not in trained}}
    spec = {
        "model": search.variant,
        **({} if search.variant in book_names() else {"reference": reference_of_model(search.variant)}),
        "settings": settings,
        "data": search.data,
        "data_source": search.dataset.source if search.dataset else None,
        "classes": list(search.dataset.classes) if search.dataset else None,
        "study": search.study.study_name,
        "trial": best["trial"],
        "val_accuracy": best["val_accuracy"],
        "checkpoint": best["checkpoint"],
    }
    path = search.folder / BEST_NAME
    atomic.atomic_write_text(path, jsonio.dumps(spec, indent=2) + "\n")
    return path
