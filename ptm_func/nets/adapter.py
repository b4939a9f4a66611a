"""Turn any nn.Module into the pure `(params, state)` + `apply` form via functional_call."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ptm_func.nets.layers import Params, State


@dataclass(frozen=True)
class FunctionalModule:
    """A module seen as a pure function. `aliases` maps tied state_dict keys to their owner."""

    module: nn.Module
    aliases: dict[str, str]

    def apply(self, params: Params, state: State, x: Tensor, *, train: bool, key=None):
        """Run the module on explicit tensors: `(output, new_state)`; the module is left as it was.

        Buffers are cloned first, so the module's in-place BN updates land in the returned
        state. Dropout draws from torch's RNG, seeded from `key` inside a forked RNG scope.
        """
        if train and key is None and _has_dropout(self.module):
            raise ValueError("this module uses dropout: training mode needs an explicit `key`")
        new_state = {name: buf.clone() for name, buf in state.items()}
        modes = [(m, m.training) for m in self.module.modules()]
        self.module.train(train)
        try:
            with _seeded(key, x.device):
                # tie_weights=False: tied names are passed once (de-duplicated) and the shared
                # submodule sees them under every name (pytorch #164759).
                out = functional_call(
                    self.module, {**params, **new_state}, (x,), tie_weights=False, strict=False
                )
        finally:
            for m, mode in modes:
                m.training = mode
        return out, new_state


def functionalize(module: nn.Module) -> tuple[FunctionalModule, Params, State]:
    """Split `module` into a pure apply and de-duplicated copies of its params and buffers.

    Copies, not views: training or running the module afterwards does not change them.
    """
    seen: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        owner = seen.setdefault(id(tensor), name)
        if owner != name:
            aliases[name] = owner
    params = {name: p.detach().clone() for name, p in module.named_parameters()}
    state = {name: b.detach().clone() for name, b in module.named_buffers()}
    return FunctionalModule(module, aliases), params, state


def _has_dropout(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())


@contextlib.contextmanager
def _seeded(key, device: torch.device):
    """Seed torch's RNG from `key` for the duration, restoring it afterwards."""
    if key is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(key))
        yield
