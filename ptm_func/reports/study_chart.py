"""A tuning study as a PNG: the optimisation history, and val accuracy against each parameter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptm_func.reports.plot import fitted, pyplot, save_figure

COMPLETE, PRUNED = "COMPLETE", "PRUNED"


def study_chart(
    trials: Sequence[dict[str, Any]], log_params: Sequence[str], path: str | Path, title: str
) -> Path:
    """`trials`: dicts of number, state, value (a pruned trial's: its last reported val accuracy),
    params and epochs. Left, every trial's val accuracy by trial number with the best so far;
    right, one panel per parameter (log scale for `log_params`). Pruned trials are crosses."""
    plt = pyplot()
    shown = [t for t in trials if t["state"] in (COMPLETE, PRUNED) and t["value"] is not None]
    params = sorted({name for t in shown for name in t["params"]})
    cols = 1 + len(params)
    fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 3.6), dpi=100, squeeze=False, sharey=True)
    _history(axes[0][0], shown)
    for ax, name in zip(axes[0][1:], params, strict=True):
        _against(ax, shown, name, name in log_params)
    pruned = sum(t["state"] == PRUNED for t in shown)
    heading = f"{title}: {len(shown) - pruned} complete and {pruned} pruned trials"
    fig.suptitle(fitted(heading + "  (x: pruned, at its last val accuracy)", fig), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def _history(ax, trials: Sequence[dict[str, Any]]) -> None:
    for state, marker, label in ((COMPLETE, "o", "complete"), (PRUNED, "x", "pruned")):
        picked = [t for t in trials if t["state"] == state]
        ax.scatter([t["number"] for t in picked], [t["value"] for t in picked], marker=marker, label=label)
    done = sorted((t for t in trials if t["state"] == COMPLETE), key=lambda t: t["number"])
    best, xs, ys = -math.inf, [], []
    for t in done:
        best = max(best, t["value"])
        xs.append(t["number"])
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="black", linewidth=1, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("val accuracy")
    ax.set_title("optimisation history", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _against(ax, trials: Sequence[dict[str, Any]], name: str, log: bool) -> None:
    for state, marker in ((COMPLETE, "o"), (PRUNED, "x")):
        picked = [t for t in trials if t["state"] == state and name in t["params"]]
        ax.scatter([t["params"][name] for t in picked], [t["value"] for t in picked], marker=marker)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(name + (" (log)" if log else ""))
    ax.set_title(f"val accuracy against {name}", fontsize=9)
    ax.grid(alpha=0.3)


def schedule_chart(
    schedules: Sequence[Sequence[tuple[int, dict[str, Any]]]],
    names: Sequence[str],
    log_names: Sequence[str],
    epochs: int,
    path: str | Path,
    title: str,
) -> Path:
    """Population-based training's hyperparameter schedules: one panel per hyperparameter, one
    step line per member (its value from each change to the next), a dot where it copied."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for member, changes in enumerate(schedules):
            xs = [epoch for epoch, _ in changes] + [epochs]
            ys = [values[name] for _, values in changes]
            line = ax.step(xs, ys + ys[-1:], where="post", linewidth=1.2, label=f"member {member}")
            ax.scatter(xs[1:-1], ys[1:], color=line[0].get_color(), s=14)
        if name in log_names:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(fitted(title + " (dots: copied a better member, then perturbed)", fig), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, plt, path)
