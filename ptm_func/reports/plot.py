"""PNG figures with matplotlib (the optional `plot` extra)."""

from __future__ import annotations

import math
import textwrap
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


def comparison_chart(rows: Sequence[ComparisonRow], path: str | Path, title: str | None = None) -> Path:
    """The book's bar chart: train vs val accuracy per variant, under `title` (what was compared:
    `reports.compare.describe_comparison`)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    xs = range(len(rows))
    width = 0.4
    train = [math.nan if r.train_accuracy is None else r.train_accuracy for r in rows]
    val = [math.nan if r.val_accuracy is None else r.val_accuracy for r in rows]
    ax.bar([x - width / 2 for x in xs], train, width, label="train")
    ax.bar([x + width / 2 for x in xs], val, width, label="val")
    ax.set_xticks(list(xs), [r.variant for r in rows])
    low = min((v for v in train + val if not math.isnan(v)), default=0.0)
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("accuracy after the last epoch")
    ax.legend(loc="upper left", ncol=2)
    if title:
        ax.set_title(fitted(title, fig), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def fitted(title: str, fig, fontsize: float = 10) -> str:
    """`title` wrapped to the figure's width (about 13 characters an inch at font size 10)."""
    width = max(20, int(fig.get_figwidth() * 130 / fontsize))
    return "\n".join(textwrap.fill(line, width) for line in title.splitlines())


Runs = Sequence[tuple[str, Sequence[dict[str, Any]]]]  # (label, epoch lines as records.py writes them)
TRAIN_STYLE, VAL_STYLE = "-", "--"


def plural(count: int, noun: str) -> str:
    """`1 epoch`, `3 epochs`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def epochs_drawn(lines: Sequence[dict[str, Any]]) -> str:
    """`10 epochs`, or `3 of 10 epochs` for a run that planned more than its record holds."""
    done = max((line["epoch"] for line in lines), default=0)
    planned = max((line.get("epochs") or 0 for line in lines), default=0)
    return f"{done} of {plural(planned, 'epoch')}" if planned > done else plural(done, "epoch")


def curves_title(runs: Runs, what: str = "learning curves") -> str:
    """`learning curves, 10 epochs: a, b`, or `learning curves: a (10 epochs), b (3 of 10 epochs)`."""
    counts = [epochs_drawn(lines) for _, lines in runs]
    if len(set(counts)) == 1:
        return f"{what}, {counts[0]}: " + ", ".join(label for label, _ in runs)
    labelled = (f"{label} ({count})" for (label, _), count in zip(runs, counts, strict=True))
    return f"{what}: " + ", ".join(labelled)


def tidy_epochs(lines: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The lines in epoch order, the last of any repeated epoch kept; and what was wrong.

    A record holds each epoch once, in order; a repeated or out-of-order epoch (records
    concatenated or edited by hand) would draw a curve that runs backwards.
    """
    problems = []
    epochs = [line["epoch"] for line in lines]
    repeated = sorted({e for e in epochs if epochs.count(e) > 1})
    if len(repeated) == 1:
        epoch = repeated[0]
        problems.append(f"epoch {epoch} appears {epochs.count(epoch)} times; its last line is drawn")
    elif repeated:
        shown = ", ".join(map(str, repeated[:5])) + (", ..." if len(repeated) > 5 else "")
        problems.append(f"epochs {shown} appear more than once; the last line of each is drawn")
    descents = [(a, b) for a, b in zip(epochs, epochs[1:], strict=False) if b < a]
    if descents:
        a, b = descents[0]
        problems.append(f"epochs out of order (epoch {b} after epoch {a}); drawn in epoch order")
    latest = {line["epoch"]: line for line in lines}
    return [latest[e] for e in sorted(latest)], problems


def learning_curves(runs: Runs, path: str | Path, title: str | None = None) -> Path:
    """Accuracy (running train, val) and loss per epoch, overlaid, one colour per run.

    A run of K members (an ensemble) is drawn as K thin curves and their mean. The default
    title says the epochs drawn.
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
    ax_acc.set_title("accuracy", fontsize=10)
    ax_acc.legend(handles=_style_handles(Line2D, "black", "black"), loc="lower right", fontsize=8)
    ax_loss.set_ylabel("training loss (mean per batch)")
    ax_loss.set_title("training loss (while training, penalty included)", fontsize=10)
    ax_loss.legend(handles=run_handles, loc="upper right", fontsize=8)
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
    _epoch_axes((ax_acc, ax_loss))
    fig.suptitle(fitted(title or curves_title(runs), fig, fontsize=12), fontsize=12)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def learning_curves_grid(runs: Runs, path: str | Path, title: str | None = None) -> Path:
    """Train and val accuracy per epoch, one small panel per run, shared axes (for many runs).

    Default title: the epochs drawn and the runs' names (`curves_title`).
    """
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
    fig.suptitle(fitted(title or curves_title(runs), fig, fontsize=12), fontsize=12)
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


def sweep_chart(
    rows: Sequence[dict[str, Any]],
    swept: Sequence[str],
    path: str | Path,
    title: str,
    *,
    epochs: int | None = None,
) -> Path:
    """Accuracy against the swept values: a line (train and val) for one swept hyperparameter,
    a heatmap (val) for two, bars (val, best first) for more or none.

    `title` names the sweep (`sweep of net`); the chart adds the epochs and what it draws: the
    mean over seeds, +/- their std only where there are two or more.
    """
    plt = pyplot()
    rows = [r for r in rows if r["val_mean"] is not None]
    seeds = max((r.get("seeds", 1) - r.get("diverged", 0) for r in rows), default=1)
    spread = seeds >= 2
    over = f"mean +/- std over {seeds} seeds" if spread else "one seed"

    def errors(which: str) -> list[float] | None:
        return [r[f"{which}_std"] for r in rows] if spread else None

    if len(swept) == 1 and rows:
        (key,) = swept
        rows = sorted(rows, key=lambda r: r[key])
        drawn = f"train and val accuracy (eval mode), {over}"
        fig, ax = plt.subplots(figsize=(6.4, 4), dpi=100)
        xs = [r[key] for r in rows]
        for which, label in (("val", "val"), ("train", "train")):
            ax.errorbar(
                xs, [r[f"{which}_mean"] for r in rows], yerr=errors(which), marker="o", capsize=3, label=label
            )
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(key)
        ax.set_ylabel("accuracy (eval mode)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    elif len(swept) == 2 and rows:
        drawn = "val accuracy" + (f", mean over {seeds} seeds" if spread else ", one seed")
        first, second = swept
        ys, xs = sorted({r[first] for r in rows}), sorted({r[second] for r in rows})
        grid = [[float("nan")] * len(xs) for _ in ys]
        for r in rows:
            grid[ys.index(r[first])][xs.index(r[second])] = r["val_mean"]
        fig, ax = plt.subplots(figsize=(1.6 + 1.1 * max(len(xs), 2), 1.6 + 0.8 * len(ys)), dpi=100)
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
        fig.colorbar(image, ax=ax, label="val accuracy" + (" (mean over seeds)" if spread else ""))
    else:
        drawn = f"val accuracy, {over}"
        labels = [" ".join(f"{k}={r[k]:g}" for k in swept) or "all" for r in rows]
        fig, ax = plt.subplots(figsize=(7, 1.3 + 0.35 * max(len(rows), 1)), dpi=100)
        bars = [r["val_mean"] for r in rows]
        ax.barh(range(len(rows)), bars, xerr=errors("val"), capsize=3)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("val accuracy" + (f" ({over})" if spread else ""))
        if rows:
            low = min(bars)
            ax.set_xlim(max(0.0, low - 0.05), 1.0)
    heading = title + (f", {plural(epochs, 'epoch')}" if epochs is not None else "")
    ax.set_title(fitted(f"{heading}\n{drawn}", fig), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def image_grid(
    panels: Sequence[tuple[str, torch.Tensor, str, torch.Tensor]], path: str | Path, title: str | None = None
) -> Path:
    """Grey images from (input title, input, output title, output) panels, under `title`.

    Panels sharing one input (the convolution demo) draw it once, first, then every output,
    three a row; otherwise each row pairs an input with its output.
    """
    plt = pyplot()
    first = panels[0][1]
    if all(left is first or torch.equal(left, first) for _, left, _, _ in panels):
        images = [(panels[0][0], first)] + [(right_title, right) for _, _, right_title, right in panels]
        cols = min(3, len(images))
        rows = math.ceil(len(images) / cols)
    else:
        images = [image for l_t, left, r_t, right in panels for image in ((l_t, left), (r_t, right))]
        cols, rows = 2, len(panels)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows + 0.4), dpi=100, squeeze=False)
    for ax, (panel_title, image) in zip(axes.flat, images, strict=False):
        ax.imshow(image.detach().cpu().numpy(), cmap="gray")
        ax.set_title(panel_title, fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(fitted(title, fig), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def save_figure(fig, plt, path, dpi: float | None = None) -> Path:
    """Write `fig` as PNG at `path` (its folder made if missing), then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
