"""`ptm compare --tuned`: the chapter's comparison with the learning rate taken out of it.

Each variant gets the same search budget (its own study over lr, momentum and weight decay,
pruned by successive halving), then S seeds of its best settings train as a sweep. The table
gives each variant's mean +/- std and a 95% interval over the seeds, the book's one-lr number
beside it, and whether its difference from Net is larger than the seed noise (Welch's 95%
interval of the difference excludes 0).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ptm_func.errors import SettingsError
from ptm_func.files import atomic, jsonio
from ptm_func.runs import sweep
from ptm_func.runs.reporter import Reporter
from ptm_func.runs.sweep_run import run_sweep
from ptm_func.runs.tune import run_tune

SEARCH = {"lr": "1e-3:1e-1:log", "momentum": "0:0.95", "weight_decay": "1e-5:1e-2:log"}
# the book's val accuracy per variant, each trained at its one learning rate (reference.md)
BOOK_VAL = {"net": 0.89, "width": 0.90, "l2": 0.87, "dropout": 0.88, "batchnorm": 0.89, "depth": 0.90,
            "res": 0.90, "resdeep": 0.86}  # fmt: skip
# Student's t, 97.5% quantile, by degrees of freedom (1..30; 1.96 beyond)
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]  # fmt: skip


def t975(df: float) -> float:
    """Student's t 97.5% quantile for `df` degrees of freedom (rounded down: conservative)."""
    whole = max(1, int(math.floor(df)))
    return T975[whole - 1] if whole <= len(T975) else 1.96


@dataclass
class TunedRow:
    variant: str
    best: dict[str, float]  # the study's best settings
    trials: dict[str, int]  # the study's trials by state
    vals: list[float]  # val accuracy of each seed, trained with `best`
    mean: float
    std: float  # sample std (n - 1)
    ci95: tuple[float, float]
    book_val: float | None
    vs_net: tuple[float, float, float] | None = None  # difference of means, its Welch 95% interval
    beyond_noise: bool | None = None


def interval(vals: Sequence[float]) -> tuple[float, float, tuple[float, float]]:
    """Mean, sample std and the t 95% interval of the mean."""
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    half = t975(len(vals) - 1) * std / math.sqrt(len(vals)) if len(vals) > 1 else math.inf
    return mean, std, (mean - half, mean + half)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and Welch's 95% interval of it."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t975(df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def run_tuned_comparison(
    variants: Sequence[str],
    *,
    trials: int = 12,
    tune_epochs: int = 5,
    seeds: int = 3,
    epochs: int = 10,
    batch: int | None = None,
    seed: int = 0,
    out: str | Path = Path("runs") / "compare-tuned",
    data: str | Path | None = None,
    device: str | torch.device = "auto",
    reporter: Reporter | None = None,
) -> list[TunedRow]:
    """Tune every variant with the same budget, train `seeds` seeds of its best, and compare.

    Rerunning continues: finished studies and sweeps are read back, not trained again."""
    if seeds < 2:
        raise SettingsError(f"--seeds must be >= 2 for an interval, got {seeds}")
    for option, value in (("--trials", trials), ("--tune-epochs", tune_epochs), ("--epochs", epochs)):
        if value < 1:
            raise SettingsError(f"{option} must be >= 1, got {value}")
    if not variants:
        raise SettingsError("give variants to compare")
    reporter = reporter or Reporter()
    out = Path(out)
    rows = [
        _variant(v, trials, tune_epochs, seeds, epochs, batch, seed, out, data, device, reporter)
        for v in variants
    ]
    net = next((r for r in rows if r.variant == "net"), None)
    for row in rows:
        if net is not None and row is not net:
            row.vs_net = welch(row.vals, net.vals)
            row.beyond_noise = not row.vs_net[1] <= 0 <= row.vs_net[2]
    described = {"search": SEARCH, "trials": trials, "tune_epochs": tune_epochs, "seeds": seeds,
                 "epochs": epochs, "rows": [asdict(r) for r in rows]}  # fmt: skip
    atomic.atomic_write_text(out / "compare-tuned.json", jsonio.dumps(described, indent=2) + "\n")
    return rows


def _variant(
    variant, trials, tune_epochs, seeds, epochs, batch, seed, out, data, device, reporter
) -> TunedRow:
    reporter.message(f"== {variant}: a study of {trials} trials x {tune_epochs} epochs ==")
    study = run_tune(
        variant, space=dict(SEARCH), trials=trials, epochs=tune_epochs, batch=batch, pruner="halving",
        seed=seed, study=f"compare-{variant}", storage=str(out / "studies.journal"),
        out=out / f"tune-{variant}", data=data, device=device, reporter=reporter,
    )  # fmt: skip
    if not study.rows:
        raise SettingsError(f"the study of {variant} finished no trial")
    best = {k: study.rows[0][k] for k in SEARCH}
    reporter.message(f"== {variant}: {seeds} seeds of the best ({_text(best)}) x {epochs} epochs ==")
    # named by what it trains: a larger study's new best, other seeds or epochs train anew
    folder = out / f"seeds-{variant}-trial{study.rows[0]['trial']}-{seeds}x{epochs}"
    again = (folder / sweep.SPEC_NAME).exists()
    report = run_sweep(
        None if again else variant, resume=folder if again else None, out=None if again else folder,
        seeds=seeds, grid={}, data=data, device=device, reporter=reporter, epochs=epochs, **best,
    )  # fmt: skip
    vals = [r["val_accuracy"] for r in report.outcome.results if r["val_accuracy"] is not None]
    mean, std, ci = interval(vals)
    return TunedRow(variant, best, dict(study.counts), vals, mean, std, ci, BOOK_VAL.get(variant))


def _text(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in values.items())
