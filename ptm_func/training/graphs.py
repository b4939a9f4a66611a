"""The CUDA-graphed step: what it carries from step to step lives at fixed addresses it owns.

torch.compile's mode="reduce-overhead" replays CUDA graphs (inductor's cudagraph trees). The
tensors a replay returns live in the graphs' memory pool, and once the next step begins
(`torch.compiler.cudagraph_mark_step_begin`) every earlier output is dead: reading one raises
"accessing tensor output of CUDAGraphs that has been overwritten by a subsequent run". A train
step feeds its outputs (params, state, optimizer state) back in as its next inputs, so it may
not hand those outputs on. Here they are copied, with one `torch._foreach_copy_`, into buffers
that this step owns and marks static (`torch._dynamo.mark_static_address`): the next replay
reads them where they are, with no copy into the graph's own input slots, and the caller never
holds a tensor of the pool.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils import _pytree as pytree


class CarriedBuffersStep:
    """Wrap a reduce-overhead compiled `step(params, state, opt_state, *rest)` -> `(params,
    state, opt_state, metrics)` so that what it returns is never a CUDA-graph output.

    The returned params, state and optimizer state are this object's buffers: the next call
    overwrites them, so a caller that keeps a step's results past the next call clones them
    (the loop's snapshots do). The metrics are graph outputs, valid until the next call. A call
    that raises leaves the buffers and its inputs as they were (fallback.py repeats it).
    """

    def __init__(self, compiled: Callable):
        self.compiled = compiled
        self.buffers: tuple | None = None  # (params, state, opt_state) at static addresses
        self._leaves: list[Tensor] = []  # the buffers' tensors, in pytree order
        self._spec: pytree.TreeSpec | None = None

    def __call__(self, params, state, opt_state, *rest):
        buffers = self._load((params, state, opt_state))
        torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs are dead
        *new, metrics = self.compiled(*buffers, *rest)
        leaves, spec = pytree.tree_flatten(tuple(new))
        if spec != self._spec:  # keys in another order would pair the wrong tensors
            raise RuntimeError(f"the step returned {spec}, not the {self._spec} it was given")
        _copy_all(self._leaves, leaves)
        return (*buffers, metrics)

    def _load(self, carried: tuple) -> tuple:
        """Make the buffers hold `carried`: they are the buffers already (the last step's
        results), are copied into them, or (first call, or other shapes) become new buffers."""
        leaves, spec = pytree.tree_flatten(carried)
        if self.buffers is not None and spec == self._spec:
            if all(a is b for a, b in zip(leaves, self._leaves, strict=True)):
                return self.buffers
            if all(
                (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)
                for a, b in zip(leaves, self._leaves, strict=True)
            ):
                _copy_all(self._leaves, leaves)
                return self.buffers
        if not all(isinstance(leaf, Tensor) for leaf in leaves):
            raise TypeError("a CUDA-graphed step carries tensors only")
        clones: dict[int, Tensor] = {}  # tied keys (resdeep's one block) stay one tensor
        for leaf in leaves:
            if id(leaf) not in clones:
                clones[id(leaf)] = _static_clone(leaf)
        self._leaves = [clones[id(leaf)] for leaf in leaves]
        self._spec = spec
        buffers = pytree.tree_unflatten(self._leaves, spec)
        self.buffers = buffers
        return buffers


def _copy_all(targets: list[Tensor], sources: list[Tensor]) -> None:
    """targets[i].copy_(sources[i]) for all i, in one fused multi-tensor kernel where it can."""
    torch._foreach_copy_(targets, sources)  # pyright: ignore[reportPrivateImportUsage] - no public name


def _static_clone(t: Tensor) -> Tensor:
    copy = t.clone()
    torch._dynamo.mark_static_address(copy, guard=False)  # a new address re-records, not recompiles
    return copy
