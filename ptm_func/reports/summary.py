"""Parameter summaries: the book's `numel_list`, per tensor, with tied keys counted once."""

from __future__ import annotations

from typing import Any

from ptm_func.nets.registry import Model


def parameter_summary(model: Model) -> dict[str, Any]:
    """Describe `model`'s parameters: per-tensor shapes and counts, and totals.

    `tensors` lists each distinct parameter once (in state_dict order); `tied_keys` counts
    the extra state_dict keys that alias one of them (the book's tied resdeep).
    """
    params, state = model.init(seed=0)
    aliases = model.aliases
    tensors = [
        {"key": key, "shape": list(value.shape), "numel": value.numel()}
        for key, value in params.items()
        if key not in aliases
    ]
    return {
        "model": model.name,
        "book_class": model.book_class,
        "config": dict(model.config),
        "tensors": tensors,
        "numel_list": [t["numel"] for t in tensors],
        "total": sum(t["numel"] for t in tensors),
        "state_keys": len(state),
        "tied_keys": len(aliases),
    }
