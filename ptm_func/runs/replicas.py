"""`ptm train --replicas K`: K seeds of one config trained at once, one checkpoint each, and
their ensemble (the mean of their probabilities)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptm_func.data.dataset import Dataset
from ptm_func.files.checkpoint import save_checkpoint, save_or_rescue
from ptm_func.files.records import RunRecord, replica_path
from ptm_func.nets.registry import Model
from ptm_func.research.ensemble import ensemble_accuracy
from ptm_func.runs.reporter import Reporter
from ptm_func.training.config import TrainConfig, config_dict
from ptm_func.training.loop import fit_ensemble
from ptm_func.training.state import EpochStats, TrainResult


def train_replicas(
    net: Model,
    data: Dataset,
    config: TrainConfig,
    replicas: int,
    out: Path,
    facts: dict[str, Any],
    record: RunRecord,
    reporter: Reporter,
    stop_requested,
) -> tuple[TrainResult, list[Path], list[str]]:
    """Train, then save replica r at out-rR.safetensors (or a rescue file): the result, the
    paths and the save failures."""

    def on_epoch(stats: EpochStats, ts) -> None:
        reporter.epoch(stats)
        record.log_epoch(stats)

    with reporter.running(config.epochs):
        result = fit_ensemble(
            net,
            data,
            config,
            replicas,
            on_epoch=on_epoch,
            on_step=reporter.step,
            stop_requested=stop_requested,
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
            member_facts.update(train_accuracy=result.train_accuracy[r], val_accuracy=result.val_accuracy[r])
        where, failure = save_or_rescue(
            lambda path, ts=ts, f=member_facts: save_checkpoint(path, net, ts.params, ts.state, f),
            replica_path(out, r),
        )
        paths.append(where)
        failures += [failure] if failure else []
    return result, paths, failures


def replicas_summary(
    variant: str, net: Model, data: Dataset, result: TrainResult, paths: list[Path], record: RunRecord
) -> dict[str, Any]:
    """Mean +/- std and the ensemble's val accuracy (finite replicas); written to the record."""
    summary = {"model": variant, "checkpoints": [str(p) for p in paths], "record": str(record.metrics)}
    summary.update(result.summary())
    if result.interrupted:
        summary["interrupted_after_epoch"] = len(result.history)
    if result.diverged:
        summary.update(diverged_in_epoch=result.diverged_in, diverged_members=result.diverged_members)
    finite = [r for r in range(len(result.configs)) if r not in result.diverged]
    if result.train_accuracy and finite:
        members = [(net, result.member(r).params, result.member(r).state) for r in finite]
        summary["ensemble_val_accuracy"] = ensemble_accuracy(members, data.val)["ensemble"]
    record.finish(summary)
    return summary
