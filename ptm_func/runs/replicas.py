"""`ptm train --replicas K`: K seeds of one config, trained the one way several seeds train,
as `ptm sweep --seeds K` (resumable, locked, member checkpoints and records in one folder);
then each replica, their mean +/- std and their ensemble (the mean of their probabilities).

    outcome = run_replicas("dropout", 3, epochs=10)   # runs/sweep-dropout/dropout-seed123 ... 125
    outcome.summary["ensemble_val_accuracy"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptm_func.errors import SettingsError
from ptm_func.runs.arguments import whole
from ptm_func.runs.reporter import Reporter
from ptm_func.runs.sweep import read_spec
from ptm_func.runs.sweep_run import SweepReport, run_sweep
from ptm_func.text import printable
from ptm_func.training.config import TrainConfig
from ptm_func.training.state import mean_std


@dataclass
class ReplicasOutcome:
    """What `--replicas` did: the sweep it ran and the replicas' summary (`ptm train --json`)."""

    variant: str
    report: SweepReport
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.report.folder

    @property
    def interrupted(self) -> bool:
        return self.report.interrupted

    @property
    def signal(self) -> int:
        return self.report.signal


def run_replicas(
    variant: str,
    replicas: int,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> ReplicasOutcome:
    """Train seeds seed .. seed+K-1 of `variant` into a sweep folder (`out`, default
    runs/sweep-VARIANT), or continue the one `resume` names; `options` are run_sweep's (data,
    classes, device, checkpoint_every, stop_on_signals) and the settings of every replica."""
    whole("replicas", replicas)
    if out is not None and Path(out).suffix == ".safetensors":
        raise SettingsError(
            f"--replicas writes a folder of {replicas} checkpoints: give --out a folder, got {out}"
        )
    if resume is not None:
        saved = read_spec(Path(resume))[0].get("variant")
        if saved != variant:
            raise SettingsError(f"{resume} holds {printable(saved)!r} replicas, not {variant!r}")
        report = run_sweep(resume=resume, reporter=reporter, **options)
    else:
        seed = options.pop("seed", TrainConfig.seed)
        report = run_sweep(variant, seeds=replicas, seed=seed, out=out, reporter=reporter, **options)
    outcome = ReplicasOutcome(report.variant, report)
    if not report.interrupted and report.main:
        outcome.summary = replicas_summary(report)
    return outcome


def replicas_summary(report: SweepReport) -> dict[str, Any]:
    """Each replica's accuracies and checkpoint, mean +/- std over the finished ones, their
    ensemble's val accuracy, and which diverged."""
    results = report.outcome.results
    finished = [r for r in results if r["val_accuracy"] is not None and r["diverged_in_epoch"] is None]
    summary: dict[str, Any] = {
        "model": report.variant,
        "folder": str(report.folder),
        "checkpoints": [r["checkpoint"] for r in results],
        "seeds": [r["seed"] for r in results],
        "train_accuracy": [r["train_accuracy"] for r in results],
        "val_accuracy": [r["val_accuracy"] for r in results],
        "train_accuracy_mean_std": mean_std([r["train_accuracy"] for r in finished]),
        "val_accuracy_mean_std": mean_std([r["val_accuracy"] for r in finished]),
        "ensemble_val_accuracy": report.rows[0].get("ensemble_val") if report.rows else None,
        "seconds": round(report.outcome.seconds, 3),
    }
    diverged = [i for i, r in enumerate(results) if r["diverged_in_epoch"] is not None]
    if diverged:
        summary["diverged_members"] = diverged
        summary["diverged_in_epoch"] = min(results[i]["diverged_in_epoch"] for i in diverged)
    return summary
