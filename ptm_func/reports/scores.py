"""`ptm eval`: train and val accuracy of checkpoints (eval mode), and of their ensemble."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ptm_func.data.sources import load_dataset
from ptm_func.errors import ClassChoiceError
from ptm_func.files.checkpoint import load_ensemble
from ptm_func.research.ensemble import ensemble_accuracy
from ptm_func.research.members import require_finite
from ptm_func.text import names
from ptm_func.training.devices import resolve_device
from ptm_func.training.evaluate import evaluate


def score_checkpoints(
    paths: Sequence[str | Path],
    data: str | Path | None = None,
    classes: list[str] | None = None,
    device: str = "auto",
    *,
    notify: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One checkpoint's accuracies, or each member's and the ensemble's (argmax of the mean of
    their probabilities). Default data and classes: those the first checkpoint was trained on.

    Raises CheckpointError for a checkpoint whose weights are not all finite."""
    dev = resolve_device(device)
    loaded = load_ensemble(list(paths), dev)
    for path, ckpt in zip(paths, loaded, strict=True):
        require_finite(ckpt, path)  # NaN weights would score as a coin toss
    first = loaded[0].training
    source = data or first.get("data") or first.get("data_dir")
    outputs = loaded[0].model.n_classes
    classes = _same_classes(classes, first.get("classes"), outputs, paths[0])
    dataset = load_dataset(source, classes or first.get("classes"), dev, notify=notify, n_classes=outputs)
    if len(loaded) == 1:
        ckpt = loaded[0]
        return {
            "checkpoint": str(paths[0]),
            "model": ckpt.model.name,
            "config": ckpt.model.config,
            "data": dataset.source,
            "train_accuracy": evaluate(ckpt.model, ckpt.params, ckpt.state, dataset.train),
            "val_accuracy": evaluate(ckpt.model, ckpt.params, ckpt.state, dataset.val),
        }
    members = [(c.model, c.params, c.state) for c in loaded]
    train, val = ensemble_accuracy(members, dataset.train), ensemble_accuracy(members, dataset.val)
    return {
        "data": dataset.source,
        "members": [
            {
                "checkpoint": str(path),
                "model": c.model.name,
                "config": c.model.config,
                "train_accuracy": train["members"][r],
                "val_accuracy": val["members"][r],
            }
            for r, (path, c) in enumerate(zip(paths, loaded, strict=True))
        ],
        "ensemble": {"train_accuracy": train["ensemble"], "val_accuracy": val["ensemble"]},
    }


def _same_classes(asked: list[str] | None, trained: list[str] | None, outputs: int, path) -> list[str] | None:
    """The classes to score on, in the order the checkpoint's outputs mean them: output i is
    `trained[i]`, so `--classes` in another order is relabelled back to it; other classes than
    it was trained on are refused (ClassChoiceError), unless the file records none (a .pt)."""
    if not asked or not trained or len(asked) != outputs:
        return asked  # nothing to check against, or load_dataset refuses the count
    if set(asked) != set(trained):
        raise ClassChoiceError(
            f"{path} was trained on {names(trained)}, not {names(asked)}; its outputs mean those "
            "classes (give them in any order, or leave --classes out)"
        )
    return list(trained)
