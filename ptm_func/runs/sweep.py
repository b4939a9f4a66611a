"""Hyperparameter sweeps: a grid of members trained together, saved and recorded one by one.

A sweep is the cartesian product of lists of hyperparameters (lr, momentum, dampening, weight
decay, the L2/L1 lambdas) times seeds. Its members train K at a time through `train.fit`
(one step over K members), each with its own checkpoint and record, which are the ones its
separate `ptm train` run would write. The sweep's folder holds them and `sweep.json`: the
grid, every member, and (at the end) the results.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ptm_func.data.dataset import Dataset
from ptm_func.errors import CheckpointError, SweepError
from ptm_func.files import atomic, jsonio
from ptm_func.files.checkpoint import load_checkpoint
from ptm_func.files.ownership import SWEEP_LOCK
from ptm_func.files.records import RunRecord
from ptm_func.files.resume import load_runs, resumable_position, save_runs
from ptm_func.nets.registry import Model
from ptm_func.text import printable
from ptm_func.training.config import TrainConfig
from ptm_func.training.loop import fit
from ptm_func.training.state import EpochStats, TrainState, member_state, per_member, stack_members

# TrainConfig fields a sweep may vary -> their short names in member names (net-lr0.01-seed123)
SWEEPABLE = {
    "lr": "lr",
    "momentum": "mom",
    "dampening": "damp",
    "weight_decay": "wd",
    "l2_lambda": "l2",
    "l1_lambda": "l1",
}
SPEC_NAME = "sweep.json"


@dataclass(frozen=True)
class Member:
    name: str  # file stem of its checkpoint and records
    config: TrainConfig
    values: dict[str, float]  # the swept hyperparameters, by TrainConfig field


def grid(
    variant: str, base: TrainConfig, values: dict[str, list[float]], seeds: Sequence[int]
) -> list[Member]:
    """Every combination of `values` (in the order given), each with every seed (innermost).

    Member names show the values that vary: net-lr0.01-wd0.0005-seed123.
    """
    unknown = set(values) - set(SWEEPABLE)
    if unknown:
        raise SweepError(f"cannot sweep {sorted(unknown)}; sweepable: {', '.join(SWEEPABLE)}")
    for key, options in values.items():
        if not options or len({f"{v:g}" for v in options}) != len(options):
            raise SweepError(f"--{key.replace('_', '-')}: give distinct values, got {options}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise SweepError(f"give distinct seeds, got {list(seeds)}")
    members = []
    for combo in itertools.product(*values.values()):
        point = dict(zip(values, combo, strict=True))
        for seed in seeds:
            try:
                config = replace(base, seed=seed, **point)
            except ValueError as err:
                raise SweepError(f"{_label(point)} seed {seed}: {err}") from None
            varied = [f"{SWEEPABLE[k]}{v:g}" for k, v in point.items() if len(values[k]) > 1]
            name = "-".join([variant, *varied, f"seed{seed}"])
            members.append(Member(name, config, point))
    return members


def _label(point: dict[str, float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in point.items()) or "(no swept values)"


def chunks(members: Sequence[Member], size: int) -> list[list[Member]]:
    """The members in groups of at most `size`, trained one group after the other."""
    if size < 1:
        raise SweepError(f"chunk size must be >= 1, got {size}")
    return [list(members[i : i + size]) for i in range(0, len(members), size)]


def checkpoint_path(folder: Path, member: Member) -> Path:
    return folder / f"{member.name}.safetensors"


def write_spec(folder: Path, spec: dict[str, Any]) -> None:
    try:
        atomic.atomic_write_text(folder / SPEC_NAME, jsonio.dumps(spec, indent=2) + "\n")
    except OSError as err:
        raise SweepError(f"cannot write {folder / SPEC_NAME}: {atomic.reason(err)}") from None


MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def read_spec(folder: Path) -> tuple[dict[str, Any], list[Member]]:
    """The sweep's settings and members, from its sweep.json."""
    path = folder / SPEC_NAME
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        members = [
            Member(m["name"], TrainConfig(**m["config"]), {k: float(v) for k, v in m["values"].items()})
            for m in spec["members"]
        ]
    except FileNotFoundError:
        raise SweepError(f"{folder} holds no {SPEC_NAME}: not a sweep folder") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise SweepError(f"{path} is not a readable sweep description ({err})") from None
    kinds = {"variant": str, "model_config": dict, "reference": str, "classes": list, "seeds": list}
    for key, kind in kinds.items():
        if key in spec and not isinstance(spec[key], kind):
            raise SweepError(f"{path} is not a readable sweep description ({key} is not a {kind.__name__})")
    if not isinstance(spec.get("variant"), str):
        raise SweepError(f"{path} is not a readable sweep description (no model name)")
    for member in members:  # a member's name names its files, inside this folder only
        name = member.name
        if not isinstance(name, str) or not MEMBER_NAME.fullmatch(name) or ".." in name:
            raise SweepError(
                f"{path} is not a readable sweep description (member {printable(member.name)!r})"
            )
    return spec, members


def member_entry(member: Member) -> dict[str, Any]:
    return {
        "name": member.name,
        "values": member.values,
        "seed": member.config.seed,
        "config": asdict(member.config),
    }


@dataclass
class SweepOutcome:
    results: list[dict[str, Any]] = field(default_factory=list)  # one per finished member
    interrupted: bool = False
    seconds: float = 0.0


@dataclass
class SweepRun:
    """Train a sweep's members chunk after chunk into `folder`.

    A chunk whose checkpoints exist continues from them; members that finished (or diverged)
    are taken from their checkpoints. Each chunk is saved as one commit (`save_runs`) when it
    stops and every `save_every` epochs; a failed periodic save goes to `on_note` and training
    goes on, a failed final save goes to a rescue folder (SweepError says where). Each member
    has its own record (NAME.run.json, NAME.metrics.jsonl), written as its epochs finish.
    """

    model: Model
    data: Dataset
    folder: Path
    info: dict[str, Any]  # every member's run.json, beside its own config
    facts: dict[str, Any]  # every member's checkpoint metadata
    device: Any
    save_every: int = 0
    on_chunk: Callable[[int, int, list[Member]], None] | None = None
    on_epoch: Callable[[EpochStats, TrainState], None] | None = None
    on_step: Callable[[int, int], None] | None = None
    on_note: Callable[[str], None] | None = None
    stop_requested: Callable[[], bool] | None = None
    tracking: Any = None  # files.tracking.Tracking: mirrors each member's record (--track)
    # fit's stop_members (ptm tune's pruner): a member stopped early saves where it stopped
    stop_members: Callable[[EpochStats, TrainState], Any] | None = None

    def __post_init__(self):
        if self.stop_members is not None and self.save_every:
            # a periodic save names members by their place in the stack, which stopping changes
            raise ValueError("a sweep run that stops members early saves at its end only (save_every=0)")

    def plan(self, members: Sequence[Member], chunk: int, rank: int = 0, ranks: int = 1) -> list[list]:
        """The unfinished members in the chunks this rank trains: members that saved at the same
        position train together (so a sweep resumes with any number of ranks or chunk size),
        each position's members split over the ranks, then cut into chunks of `chunk`."""
        by_start: dict[tuple[int, int] | None, list[Member]] = {}
        for member in members:
            path = checkpoint_path(self.folder, member)
            if not _finished(path, member):
                by_start.setdefault(resumable_position(path), []).append(member)
        return [group for same in by_start.values() for group in chunks(same[rank::ranks], chunk)]

    def run(self, groups: list[list[Member]]) -> SweepOutcome:
        """Train the planned chunks one after the other (stopping when asked to)."""
        outcome = SweepOutcome()
        for number, todo in enumerate(groups, 1):
            if self.on_chunk is not None:
                self.on_chunk(number, len(groups), todo)
            self._train(todo, outcome)
            if outcome.interrupted:
                return outcome
        return outcome

    def _train(self, todo: list[Member], outcome: SweepOutcome) -> None:
        paths = [checkpoint_path(self.folder, m) for m in todo]
        start = _saved_start(paths, todo, self.model, self.device)
        records = [RunRecord(p, self.tracking) for p in paths]
        for member, record in zip(todo, records, strict=True):
            member_info = {**self.info, "config": asdict(member.config), "sweep": member.values}
            record.start(
                member_info,
                resumed_from=record.checkpoint if start else None,
                at_epoch=start.epoch if start else 0,
            )

        gone: set[int] = set()  # members that diverged: their record ends as their own run's would

        def log(stats: EpochStats, ts: TrainState) -> None:
            for r, record in enumerate(records):
                loss = stats.member(r).loss
                if loss is None or not math.isfinite(loss):
                    gone.add(r)
                if r not in gone:
                    record.log_epoch(stats.member(r))
            if self.save_every and ts.epoch % self.save_every == 0 and ts.epoch < todo[0].config.epochs:
                try:
                    save_runs(
                        self._saves(todo, paths, [member_state(ts, r, m.config) for r, m in enumerate(todo)])
                    )
                except CheckpointError as err:
                    if self.on_note is not None:
                        self.on_note(f"{err}; training goes on")
            if self.on_epoch is not None:
                self.on_epoch(stats, ts)

        result = fit(
            self.model,
            self.data,
            [m.config for m in todo],
            start=start,
            on_epoch=log,
            on_step=self.on_step,
            stop_requested=self.stop_requested,
            stop_members=self.stop_members,
        )
        outcome.seconds += result.seconds
        outcome.interrupted = result.interrupted
        done = []
        for r in range(len(todo)):
            facts = {}
            if result.train_accuracy is not None and not result.interrupted:
                train, val = per_member(result.train_accuracy), per_member(result.val_accuracy or [])
                facts.update(train_accuracy=train[r], val_accuracy=val[r])
            if r in result.diverged:
                facts["diverged_in_epoch"] = result.diverged[r][0]
            if r in result.stopped:
                facts["stopped_in_epoch"] = result.stopped[r][0]
            done.append(facts)
        final = self._saves(todo, paths, [result.member(r) for r in range(len(todo))], done)
        try:
            save_runs(final)
        except CheckpointError as err:
            rescue = Path(tempfile.gettempdir()) / f"ptm-rescue-{os.getpid()}-{self.folder.name}"
            save_runs([(rescue / path.name, *rest) for path, *rest in final])
            raise SweepError(f"{err}; this chunk's members were saved to {rescue} instead") from None
        for r, record in enumerate(records):
            record.finish({"epochs_done": result.member(r).epoch, **done[r]})

    def _saves(self, todo, paths, states, done=None) -> list[tuple]:
        """save_runs' arguments: each member's path, model, state, config and facts."""
        out = []
        for r, (member, path, ts) in enumerate(zip(todo, paths, states, strict=True)):
            facts = {
                **self.facts,
                "sweep": member.values,
                "epochs_done": ts.epoch,
                **(done[r] if done else {}),
            }
            out.append((path, self.model, ts, member.config, facts))
        return out


def _finished(path: Path, member: Member) -> bool:
    """Has this member trained all its epochs, or diverged (so it trains no more)?"""
    if not path.exists():
        return False
    try:
        training = load_checkpoint(path).training
    except CheckpointError:
        return False
    return training.get("diverged_in_epoch") is not None or (
        training.get("epochs_done") == member.config.epochs and training.get("val_accuracy") is not None
    )


def _saved_start(paths: list[Path], group: list[Member], model: Model, device) -> TrainState | None:
    """The members as saved (stacked), or None if they have not started."""
    present = [p.exists() or bool(atomic.temp_files(p)) for p in paths]
    if not any(present):
        return None
    if not all(present):
        missing = [p.name for p, here in zip(paths, present, strict=True) if not here]
        raise SweepError(f"the sweep's chunk is incomplete: {', '.join(missing)} missing beside the others")
    loaded = load_runs(paths, device)
    for member, (ckpt, _, config) in zip(group, loaded, strict=True):
        if ckpt.model.name != model.name or config != member.config:
            raise SweepError(f"{member.name}: its checkpoint does not belong to this sweep")
    return stack_members([ts for _, ts, _ in loaded])


def saved_result(member: Member, path: Path) -> dict[str, Any]:
    try:
        training = load_checkpoint(path).training
    except CheckpointError as err:
        raise SweepError(str(err)) from None
    return {
        "name": member.name,
        **member.values,
        "seed": member.config.seed,
        "train_accuracy": training.get("train_accuracy"),
        "val_accuracy": training.get("val_accuracy"),
        "diverged_in_epoch": training.get("diverged_in_epoch"),
        "checkpoint": str(path),
    }


def table(results: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[dict[str, Any]]:
    """One row per grid point: mean +/- std over its seeds, best val accuracy first."""
    rows: dict[tuple, list[dict[str, Any]]] = {}
    for result in results:
        rows.setdefault(tuple(result[k] for k in swept), []).append(result)
    out = []
    for point, group in rows.items():
        finished = [g for g in group if g["val_accuracy"] is not None and g["diverged_in_epoch"] is None]
        val = [g["val_accuracy"] for g in finished]
        train = [g["train_accuracy"] for g in finished]
        out.append(
            {
                **dict(zip(swept, point, strict=True)),
                "seeds": len(group),
                "diverged": len(group) - len(finished),
                "val_mean": statistics.fmean(val) if val else None,
                "val_std": statistics.pstdev(val) if val else None,
                "train_mean": statistics.fmean(train) if train else None,
                "train_std": statistics.pstdev(train) if train else None,
            }
        )
    return sorted(out, key=lambda row: -1 if row["val_mean"] is None else row["val_mean"], reverse=True)


def holds_files(folder: Path) -> bool:
    """Does `folder` hold anything but its lock (and the hidden temp files of a write that a
    kill -9 cut short: .NAME.probePID, .NAME.tmpPID)?"""
    return folder.exists() and any(
        p.name != SWEEP_LOCK and not p.name.startswith(".") for p in folder.iterdir()
    )


def numbered_folders(folder: Path) -> Iterator[Path]:
    """folder, folder-2, folder-3, ...: the folders a new sweep may take."""
    yield folder
    for number in itertools.count(2):
        yield folder.with_name(f"{folder.name}-{number}")


def unused_folder(folder: Path) -> Path:
    """`folder`, or folder-2, folder-3, ...: the first that does not exist or is empty."""
    return next(f for f in numbered_folders(folder) if not holds_files(f))
