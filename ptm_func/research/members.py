"""Checkpoints used together (an ensemble, a soup, a line between two): finite, and alike.

Weights that are NaN or infinite score as a coin toss and drag an ensemble down without a
word; checkpoints trained on different classes (or of different models) average or
interpolate into nonsense. These checks refuse both, naming the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ptm_func.errors import CheckpointError, ClassChoiceError, SettingsError
from ptm_func.files.checkpoint import Checkpoint, load_checkpoint


def nonfinite_keys(tensors: dict[str, Tensor]) -> list[str]:
    """The keys of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def nonfinite_problem(checkpoint: Checkpoint, path: str | Path) -> str | None:
    """`path holds NaN or infinite weights (fc2.weight)`, or None when every value is finite."""
    bad = nonfinite_keys({**checkpoint.params, **checkpoint.state})
    if not bad:
        return None
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return f"{path} holds NaN or infinite weights ({shown})"


def require_finite(checkpoint: Checkpoint, path: str | Path) -> None:
    """Raise CheckpointError naming `path` if any of its weights or statistics is not finite."""
    problem = nonfinite_problem(checkpoint, path)
    if problem:
        raise CheckpointError(f"{problem}: it cannot be evaluated")


def require_alike(checkpoints: Sequence[Checkpoint], paths: Sequence[str | Path]) -> None:
    """Raise unless the checkpoints are one model with one config, trained on the same classes.

    A different model or config is a SettingsError, different classes a ClassChoiceError (both
    usage errors: the files given do not go together).
    """
    first, first_path = checkpoints[0], paths[0]
    for ckpt, path in zip(checkpoints[1:], paths[1:], strict=True):
        if (ckpt.model.name, ckpt.model.config) != (first.model.name, first.model.config):
            raise SettingsError(
                f"{first_path} is {_model(first)} but {path} is {_model(ckpt)}; give checkpoints of one model"
            )
        ours, theirs = first.training.get("classes") or None, ckpt.training.get("classes") or None
        if ours != theirs:
            raise ClassChoiceError(
                f"{first_path} was trained on {_classes(ours)} but {path} on {_classes(theirs)}; "
                "give checkpoints trained on the same classes"
            )


def load_members(paths: Sequence[str | Path], device: torch.device | str = "cpu") -> list[Checkpoint]:
    """Load checkpoints to use together: each finite, all alike (see `require_alike`)."""
    checkpoints = []
    for path in paths:
        ckpt = load_checkpoint(path, device)
        require_finite(ckpt, path)
        checkpoints.append(ckpt)
    require_alike(checkpoints, paths)
    return checkpoints


def _model(ckpt: Checkpoint) -> str:
    config = ", ".join(f"{k}={v}" for k, v in ckpt.model.config.items())
    return f"{ckpt.model.name} ({config})" if config else ckpt.model.name


def _classes(classes) -> str:
    return ", ".join(classes) if classes else "classes it does not record (converted from .pt?)"
