"""The book's model comparison: train several variants on the same data and seed."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ptm_func.catalog import TRAINABLE_NAMES
from ptm_func.data.dataset import Dataset
from ptm_func.errors import SettingsError
from ptm_func.files.jsonio import finite
from ptm_func.files.records import epoch_line, run_info
from ptm_func.files.tracking import Tracking
from ptm_func.nets.references import use_model
from ptm_func.nets.registry import get_model, is_known_model
from ptm_func.reports.summary import parameter_summary
from ptm_func.training.config import book_setup
from ptm_func.training.loop import fit
from ptm_func.training.state import EpochStats, TrainState, single


@dataclass(frozen=True)
class ComparisonRow:
    variant: str
    book_class: str
    params: int
    train_accuracy: float | None  # None when the training diverged
    val_accuracy: float | None
    seconds: float
    history: list[dict[str, Any]]  # EpochStats per epoch, as dicts
    diverged_in: int | None = None  # the epoch whose loss went NaN or infinite


def compare(
    names: Sequence[str],
    data: Dataset,
    overrides: dict[str, Any] | None = None,
    *,
    on_start: Callable[[str], None] | None = None,
    on_epoch: Callable[[EpochStats, TrainState], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    tracking: Tracking | None = None,
    tracking_dir: str | Path = "runs/compare.tb",
) -> list[ComparisonRow]:
    """Train each variant with the book's settings plus `overrides`, with one output per class of
    `data`; one row per variant. `tracking` (files/tracking.py) gets a run per variant, its
    TensorBoard events in `tracking_dir`/VARIANT."""
    rows = []
    tracking = tracking or Tracking()
    for name in names:
        model, config = book_setup(name, **{**(overrides or {}), "n_classes": len(data.classes)})
        if on_start is not None:
            on_start(name)
        t0 = time.perf_counter()
        info = run_info(name, model, config, data, data.train.images.device) if tracking else {}
        with tracking.open_run(name, info, tb_dir=Path(tracking_dir) / name) as tracked:

            def log(stats: EpochStats, ts: TrainState, tracked=tracked) -> None:
                tracked.epoch(finite(epoch_line(stats)))
                if on_epoch is not None:
                    on_epoch(stats, ts)

            result = fit(model, data, config, on_epoch=log, on_step=on_step)
            outcome = {"train_accuracy": result.train_accuracy, "val_accuracy": result.val_accuracy}
            tracked.finish({**outcome, "diverged_in_epoch": result.diverged_in})
        rows.append(
            ComparisonRow(
                name,
                model.book_class,
                parameter_summary(model)["total"],
                None if result.train_accuracy is None else single(result.train_accuracy),
                None if result.val_accuracy is None else single(result.val_accuracy),
                time.perf_counter() - t0,
                [asdict(stats) for stats in result.history],
                result.diverged_in,
            )
        )
    return rows


def plan_comparison(
    variants: Sequence[str],
    epochs: int | None = None,
    seed: int | None = None,
    resdeep_blocks: int | None = None,
    book_quirks: bool = False,
    augment: Sequence[str] | None = None,
    model_args: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The shared overrides and each variant's settings, all checked before the first one trains.

    A variant may be a user's model (FILE.py:ATTR, module:ATTR, a registered or installed name),
    which `model_args` configure. Raises SettingsError for an unknown variant or a setting one of
    them cannot take.
    """
    variants = [use_model(n) for n in variants]
    twice = sorted({n for n in variants if variants.count(n) > 1})
    if twice:
        raise SettingsError(f"{', '.join(twice)} is given twice: each variant trains once")
    unknown = [n for n in variants if n not in TRAINABLE_NAMES and not is_known_model(n)]
    if unknown:
        raise SettingsError(
            f"unknown model {unknown[0]!r}; choose from: {', '.join(TRAINABLE_NAMES)}, or your own "
            "(FILE.py:ATTR, module:ATTR)"
        )
    if epochs is not None and epochs < 1:
        raise SettingsError(f"--epochs must be >= 1, got {epochs}")
    if model_args and all(n in TRAINABLE_NAMES for n in variants):
        raise SettingsError("--model-arg is for your own models (FILE.py:ATTR); the book's take none")
    overrides: dict[str, Any] = {k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None}
    if book_quirks:
        overrides.update(shuffle=False, eval_train_mode=True)
    if augment:
        overrides["augment"] = tuple(augment)
    plans = []
    for name in variants:
        options = dict(overrides)
        if name == "resdeep" and resdeep_blocks is not None:
            options["n_blocks"] = resdeep_blocks
        if name not in TRAINABLE_NAMES:
            options.update(model_args or {})
        try:
            book_setup(name, **options)
        except ValueError as err:
            raise SettingsError(f"{name}: {err}") from None
        plans.append((name, options))
    return overrides, plans


def check_outputs(plans: Sequence[tuple[str, dict[str, Any]]], n_classes: int) -> None:
    """Every variant can have one output per class (a user's model may not): before any trains."""
    for name, options in plans:
        book_setup(name, **options)[0].with_classes(n_classes)


def describe_comparison(plans: Sequence[tuple[str, dict[str, Any]]], source: str) -> str:
    """`chapter-8 comparison: 20 epochs, bundled:cifar2, seed 123`, and `; resdeep: 10 blocks
    (book: 100)` when resdeep is cut short: the facts a table or chart of it needs."""
    setups = {name: book_setup(name, **options) for name, options in plans}
    epochs = sorted({config.epochs for _, config in setups.values()})
    seeds = sorted({config.seed for _, config in setups.values()})
    shown_epochs = ", ".join(map(str, epochs[:-1])) + (" or " if len(epochs) > 1 else "") + str(epochs[-1])
    text = (
        f"chapter-8 comparison: {shown_epochs} epoch{'' if epochs == [1] else 's'}, {source}, "
        f"seed {', '.join(map(str, seeds))}"
    )
    if "resdeep" in setups:
        blocks, book_blocks = setups["resdeep"][0].config["n_blocks"], get_model("resdeep").config["n_blocks"]
        if blocks != book_blocks:
            text += f"; resdeep: {blocks} blocks (book: {book_blocks})"
    augmented = sorted({", ".join(config.augment) for _, config in setups.values() if config.augment})
    if augmented:
        text += f"; augmented: {' / '.join(augmented)}"
    return text
