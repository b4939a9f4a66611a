"""PNG figures with matplotlib (the optional `plot` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .compare import ComparisonRow


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot():
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
    plt = _pyplot()
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
    return _save(fig, plt, path)


def image_grid(panels: Sequence[tuple[str, torch.Tensor, str, torch.Tensor]], path: str | Path) -> Path:
    """Rows of (input title, input, output title, output) grey images, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 2, figsize=(6, 2.6 * len(panels)), dpi=100, squeeze=False)
    for (left_title, left, right_title, right), (ax_l, ax_r) in zip(panels, axes, strict=True):
        for ax, title, image in ((ax_l, left_title, left), (ax_r, right_title, right)):
            ax.imshow(image.detach().cpu().numpy(), cmap="gray")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
