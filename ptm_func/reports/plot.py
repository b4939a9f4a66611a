"""PNG figures with matplotlib (the optional `plot` extra)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ptm_func.errors import PlotUnavailable
from ptm_func.reports.compare import ComparisonRow


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or PlotUnavailable with the fix."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "matplotlib is not installed: pip install 'ptm_func[plot]' to draw charts"
        ) from None
    return plt


def comparison_chart(rows: Sequence[ComparisonRow], path: str | Path) -> Path:
    """The book's bar chart: train vs val accuracy per variant."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    xs = range(len(rows))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], [r.train_accuracy for r in rows], width, label="train")
    ax.bar([x + width / 2 for x in xs], [r.val_accuracy for r in rows], width, label="val")
    ax.set_xticks(list(xs), [r.variant for r in rows])
    low = min(min(r.train_accuracy, r.val_accuracy) for r in rows)
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", ncol=2)
    fig.tight_layout()
    return save_figure(fig, plt, path)


Runs = Sequence[tuple[str, Sequence[dict[str, Any]]]]  # (label, epoch lines as records.py writes them)
TRAIN_STYLE, VAL_STYLE = "-", "--"


def learning_curves(runs: Runs, path: str | Path, title: str | None = None) -> Path:
    """Accuracy (running train, val) and loss per epoch, overlaid, one colour per run.

    A run of K members (an ensemble) is drawn as K thin curves and their mean.
    """
    plt = pyplot()
    from matplotlib.lines import Line2D

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    run_handles = []
    for i, (label, lines) in enumerate(runs):
        colour = colours[i % len(colours)]
        _draw(ax_acc, lines, "train_accuracy_running", TRAIN_STYLE, colour)
        _draw(ax_acc, lines, "val_accuracy", VAL_STYLE, colour)
        size = _draw(ax_loss, lines, "loss", TRAIN_STYLE, colour)
        run_handles.append(
            Line2D([], [], color=colour, lw=1.8, label=label + (f" (mean of {size})" if size > 1 else ""))
        )
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend(handles=_style_handles(Line2D, "black", "black"), loc="lower right", fontsize=8)
    ax_loss.set_ylabel("loss (mean per batch)")
    ax_loss.legend(handles=run_handles, loc="upper right", fontsize=8)
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
    _epoch_axes((ax_acc, ax_loss))
    fig.suptitle(title or "learning curves: " + ", ".join(label for label, _ in runs))
    fig.tight_layout()
    return save_figure(fig, plt, path)


def learning_curves_grid(runs: Runs, path: str | Path, title: str | None = None) -> Path:
    """Train and val accuracy per epoch, one small panel per run, shared axes (for many runs)."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    cols = min(4, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.9 * cols, 2.4 * rows + 0.6), dpi=100, sharex=True, sharey=True, squeeze=False
    )
    train_colour, val_colour = plt.rcParams["axes.prop_cycle"].by_key()["color"][:2]
    for ax, (label, lines) in zip(axes.flat, runs, strict=False):
        _draw(ax, lines, "train_accuracy_running", TRAIN_STYLE, train_colour)
        _draw(ax, lines, "val_accuracy", VAL_STYLE, val_colour)
        ax.set_title(label, fontsize=10)
    for ax in axes.flat[len(runs) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    _epoch_axes(axes.flat)
    axes.flat[0].legend(
        handles=_style_handles(Line2D, train_colour, val_colour), loc="lower right", fontsize=7
    )
    fig.suptitle(title or "learning curves")
    fig.tight_layout()
    return save_figure(fig, plt, path)


def _draw(ax, lines: Sequence[dict[str, Any]], key: str, style: str, colour: str) -> int:
    """Plot `key` per epoch (members thin, their mean bold); return the number of members."""
    members = _member_curves(lines, key)
    marker = "o" if any(len(epochs) < 12 for epochs, _ in members) else None
    for epochs, values in members if len(members) > 1 else ():
        ax.plot(epochs, values, style, color=colour, lw=0.8, alpha=0.35)
    epochs, mean = _mean_curve(members)
    ax.plot(epochs, mean, style, color=colour, lw=1.8, marker=marker, ms=3.5)
    return len(members)


def _style_handles(line2d, train_colour: str, val_colour: str) -> list:
    return [
        line2d([], [], color=train_colour, ls=TRAIN_STYLE, label="train (running, while training)"),
        line2d([], [], color=val_colour, ls=VAL_STYLE, label="val (eval mode)"),
    ]


def _epoch_axes(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)


def _member_curves(lines: Sequence[dict[str, Any]], key: str) -> list[tuple[list[int], list[float]]]:
    """Per member: the epochs where `key` was measured, and its values."""

    def values(line: dict[str, Any]) -> list[float | None]:
        value = (line.get("members") or {}).get(key, line.get(key))
        return value if isinstance(value, list) else [value]

    size = max((len(values(line)) for line in lines), default=1)
    curves = []
    for m in range(size):
        points = [(line["epoch"], v[m]) for line in lines if len(v := values(line)) > m and v[m] is not None]
        curves.append(([e for e, _ in points], [v for _, v in points]))
    return curves


def _mean_curve(members: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """The members' mean at the epochs all of them have."""
    epochs = sorted(set.intersection(*(set(e) for e, _ in members))) if members else []
    lookups = [dict(zip(e, v, strict=True)) for e, v in members]
    return epochs, [sum(lookup[e] for lookup in lookups) / len(lookups) for e in epochs]


def sweep_chart(rows: Sequence[dict[str, Any]], swept: Sequence[str], path: str | Path, title: str) -> Path:
    """Val accuracy (mean +/- std over seeds) against the swept values: a line for one swept
    hyperparameter, a heatmap for two, bars (best first) for more or none."""
    plt = pyplot()
    rows = [r for r in rows if r["val_mean"] is not None]
    if len(swept) == 1 and rows:
        (key,) = swept
        rows = sorted(rows, key=lambda r: r[key])
        fig, ax = plt.subplots(figsize=(6.4, 4), dpi=100)
        xs = [r[key] for r in rows]
        for which, label in (("val", "val (eval mode)"), ("train", "train (eval mode)")):
            ax.errorbar(
                xs,
                [r[f"{which}_mean"] for r in rows],
                yerr=[r[f"{which}_std"] for r in rows],
                marker="o",
                capsize=3,
                label=label,
            )
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(key)
        ax.set_ylabel("accuracy (mean +/- std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    elif len(swept) == 2 and rows:
        first, second = swept
        ys, xs = sorted({r[first] for r in rows}), sorted({r[second] for r in rows})
        grid = [[float("nan")] * len(xs) for _ in ys]
        for r in rows:
            grid[ys.index(r[first])][xs.index(r[second])] = r["val_mean"]
        fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(xs), 1.4 + 0.8 * len(ys)), dpi=100)
        image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
        middle = sum(image.get_clim()) / 2
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if value == value:  # not NaN
                    colour = "black" if value > middle else "white"  # readable on viridis
                    ax.text(j, i, f"{value:.3f}", ha="center", va="center", color=colour, fontsize=8)
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        ax.set_xlabel(second)
        ax.set_ylabel(first)
        fig.colorbar(image, ax=ax, label="val accuracy (mean over seeds)")
    else:
        labels = [" ".join(f"{k}={r[k]:g}" for k in swept) or "all" for r in rows]
        fig, ax = plt.subplots(figsize=(7, 1 + 0.35 * max(len(rows), 1)), dpi=100)
        ax.barh(range(len(rows)), [r["val_mean"] for r in rows], xerr=[r["val_std"] for r in rows], capsize=3)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("val accuracy (mean +/- std over seeds)")
        if rows:
            low = min(r["val_mean"] for r in rows)
            ax.set_xlim(max(0.0, low - 0.05), 1.0)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def image_grid(panels: Sequence[tuple[str, torch.Tensor, str, torch.Tensor]], path: str | Path) -> Path:
    """Rows of (input title, input, output title, output) grey images, side by side."""
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 2, figsize=(6, 2.6 * len(panels)), dpi=100, squeeze=False)
    for (left_title, left, right_title, right), (ax_l, ax_r) in zip(panels, axes, strict=True):
        for ax, title, image in ((ax_l, left_title, left), (ax_r, right_title, right)):
            ax.imshow(image.detach().cpu().numpy(), cmap="gray")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, plt, path)


def save_figure(fig, plt, path, dpi: float | None = None) -> Path:
    """Write `fig` as PNG at `path` (its folder made if missing), then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
