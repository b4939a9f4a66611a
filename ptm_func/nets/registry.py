"""Model registry: CLI names -> pure init/apply, nn.Module twin and config."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ptm_func.catalog import MODEL_NAMES
from ptm_func.errors import ModelConfigError, ModelReferenceError, UnknownModelError
from ptm_func.nets import models, modules
from ptm_func.nets.layers import STATE_SUFFIXES, Params, State
from ptm_func.nets.rng import KeyLike
from ptm_func.text import printable


@dataclass(frozen=True)
class ModelSpec:
    """What ptm needs of a model (the protocol, as data): `init(generator, **config) -> (params,
    state)`; `apply(params, state, x, *, train, key, **apply_options) -> (logits, new_state)`;
    an nn.Module twin `module(**config)` if it has one; `aliases(**config)`: state_dict keys
    that share another key's tensor (alias -> owner); `head`: the parameter whose rows are the
    outputs, one per class (`HEAD.weight`); `eager_on_cpu`: compiling does not pay on a CPU;
    `channels_last`: its apply takes channels-last images (a `.view` of the features does not)."""

    init: Callable[..., tuple[Params, State]]
    apply: Callable[..., tuple[Tensor, State]]
    module: Callable[..., nn.Module] | None
    defaults: dict[str, Any]
    book_class: str
    summary: str
    apply_options: tuple[str, ...] = ()  # config entries that apply needs as keywords
    aliases: Callable[..., dict[str, str]] | None = None
    head: str = "fc2"
    eager_on_cpu: bool = False
    channels_last: bool = True


_Spec = ModelSpec  # the book's eight, below


_SPECS: dict[str, _Spec] = {
    "net": _Spec(
        functools.partial(models.init_width, n_chans1=16),
        models.apply_width,
        modules.Net,
        {"n_classes": 2},
        "Net",
        "two conv-tanh-pool stages (16, 8 channels) and two linear layers",
    ),
    "width": _Spec(
        models.init_width,
        models.apply_width,
        modules.NetWidth,
        {"n_chans1": 32, "n_classes": 2},
        "NetWidth",
        "Net with n_chans1 channels in the first conv",
    ),
    "dropout": _Spec(
        models.init_width,
        models.apply_dropout,
        modules.NetDropout,
        {"n_chans1": 32, "n_classes": 2},
        "NetDropout",
        "NetWidth with Dropout2d(p=0.4) after each pooling",
    ),
    "batchnorm": _Spec(
        models.init_batchnorm,
        models.apply_batchnorm,
        modules.NetBatchNorm,
        {"n_chans1": 32, "n_classes": 2},
        "NetBatchNorm",
        "NetWidth with BatchNorm2d after each conv",
        eager_on_cpu=True,  # 13-18 vs 15-16 ms a step compiled and eager on a 2-core CPU
    ),
    "depth": _Spec(
        models.init_depth,
        models.apply_depth,
        modules.NetDepth,
        {"n_chans1": 32, "n_classes": 2},
        "NetDepth",
        "three conv-relu-pool stages",
    ),
    "res": _Spec(
        models.init_depth,
        models.apply_res,
        modules.NetRes,
        {"n_chans1": 32, "n_classes": 2},
        "NetRes",
        "NetDepth with a skip connection around conv3",
    ),
    "resdeep": _Spec(
        models.init_resdeep,
        models.apply_resdeep,
        modules.NetResDeep,
        {"n_chans1": 32, "n_blocks": 100, "tied": False, "n_classes": 2},
        "NetResDeep",
        "n_blocks residual blocks (conv-BN-relu + skip); tied=True is the book's shared block",
        apply_options=("n_blocks", "tied"),
        aliases=lambda n_blocks, tied, **_: models.resdeep_aliases(n_blocks, tied),
        eager_on_cpu=True,  # its time is its convolutions: 1.21x vs 1.16x the book's loop, after 85 s
    ),
}
# Sizes a config may ask for: wide and deep enough for any experiment on 32x32 images, and
# small enough that a crafted checkpoint or a typo cannot make ptm allocate without end.
if tuple(_SPECS) != MODEL_NAMES:  # catalog.py names them for the CLI's help, without torch
    raise ImportError(f"catalog.MODEL_NAMES {MODEL_NAMES} != the registry's {tuple(_SPECS)}")
# n_classes: the outputs of fc2 (the book's 2; 10 for CIFAR-10; a folder may have more).
SIZE_LIMITS = {"n_chans1": (2, 1024), "n_blocks": (1, 10_000), "n_classes": (2, 100_000)}


@dataclass(frozen=True)
class Model:
    """A network: pure `init`/`apply` (and an nn.Module twin, if it has one) for one config.

    The book's eight by name (get_model); a user's own model carries its ModelSpec
    (ptm_func.nets.user: model_from_functions, model_from_module, register_model)."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    spec: ModelSpec | None = field(default=None, compare=False, repr=False)

    @property
    def _spec(self) -> ModelSpec:
        return self.spec if self.spec is not None else _SPECS[self.name]

    @property
    def builtin(self) -> bool:
        """One of the book's eight (a name in catalog.MODEL_NAMES, its spec the registry's)."""
        return self.spec is None

    @property
    def head(self) -> str:
        return self._spec.head

    @property
    def eager_on_cpu(self) -> bool:
        return self._spec.eager_on_cpu

    @property
    def takes_channels_last(self) -> bool:
        """Does apply run (the same) on channels-last images? The book's eight do."""
        return self._spec.channels_last

    @property
    def book_class(self) -> str:
        return self._spec.book_class

    @property
    def summary(self) -> str:
        return self._spec.summary

    @property
    def n_classes(self) -> int:
        """The outputs of the head, one per class (the book's 2)."""
        return self.config["n_classes"]

    @property
    def outputs_fixed(self) -> bool:
        """A user's model whose factory takes no n_classes: its outputs are what they are."""
        if self.builtin:
            return False
        from ptm_func.nets.user import outputs_adjustable

        return not outputs_adjustable(self)

    def with_classes(self, n_classes: int) -> Model:
        """This model with `n_classes` outputs (only the head's shape changes)."""
        if n_classes == self.n_classes:
            return self
        if not self.builtin:
            from ptm_func.nets.user import with_classes

            return with_classes(self, n_classes)
        return get_model(self.name, **{**self.config, "n_classes": n_classes})

    def init(
        self, seed: int | torch.Generator = 0, device: torch.device | str | None = None
    ) -> tuple[Params, State]:
        """Build (params, state); equals the twin built after `torch.manual_seed(seed)`."""
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        params, state = self._spec.init(gen, **self.config)
        if device is not None:
            params, state = _to(params, device), _to(state, device)
        return params, state

    def apply(
        self, params: Params, state: State, x: Tensor, *, train: bool, key: KeyLike | None = None
    ) -> tuple[Tensor, State]:
        """Run the network: `(logits, new_state)`; nothing given is mutated."""
        options = {k: self.config[k] for k in self._spec.apply_options}
        return self._spec.apply(params, state, x, train=train, key=key, **options)

    def module(self) -> nn.Module:
        """Build the nn.Module twin for this config (fresh default init)."""
        if self._spec.module is None:
            raise ModelConfigError(f"{self.name} has no nn.Module twin (it was given as pure functions)")
        return self._spec.module(**self.config)

    @property
    def aliases(self) -> dict[str, str]:
        """Keys that share a tensor with another key (tied resdeep): alias -> canonical."""
        make = self._spec.aliases
        return {} if make is None else make(**self.config)

    def split(self, state_dict: dict[str, Tensor]) -> tuple[Params, State]:
        """Split a twin's state_dict into (params, state), re-tying aliased keys."""
        state_dict = models.retie(dict(state_dict), self.aliases)
        if self.builtin:
            is_state = lambda k: k.endswith(STATE_SUFFIXES)  # noqa: E731
        else:  # a user's model: its buffers, whatever their names (shapes only: no memory)
            with torch.device("meta"):
                state_keys = set(self.init(0)[1])
            is_state = state_keys.__contains__
        params = {k: v for k, v in state_dict.items() if not is_state(k)}
        state = {k: v for k, v in state_dict.items() if is_state(k)}
        return params, state


def get_model(name: str, **config: Any) -> Model:
    """Look a model up by name; `config` overrides its defaults (e.g. n_blocks=10, n_classes=10).

    The book's eight, or a name registered in this process (`ptm_func.register_model`)."""
    if name not in _SPECS:
        from ptm_func.nets.user import registered

        factory = registered(name)
        if factory is not None:
            return factory(**config)
        known = ", ".join([*MODEL_NAMES, *registered_names()])
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {known}, or give your own as FILE.py:ATTR or module:ATTR"
        )
    spec = _SPECS[name]
    unknown = set(config) - set(spec.defaults)
    if unknown:
        allowed = ", ".join(spec.defaults) or "none"
        raise ModelConfigError(f"{name} takes no option {sorted(unknown)}; its options: {allowed}")
    config = {**spec.defaults, **config}
    for key, (low, high) in SIZE_LIMITS.items():
        value = config.get(key, low)
        if type(value) is not int or not low <= value <= high:
            raise ModelConfigError(f"{key} must be an integer in {low}..{high:,}, got {value!r}")
    if type(config.get("tied", False)) is not bool:
        raise ModelConfigError(f"tied must be true or false, got {config['tied']!r}")
    return Model(name, config)


def is_builtin(name: str) -> bool:
    return name in _SPECS


def is_registered(name: str) -> bool:
    """Registered in this process (register_model, or a reference given)."""
    from ptm_func.nets.user import REGISTERED

    return name in REGISTERED


def rebuildable(name: str, reference: str | None) -> bool:
    """Can a model recorded as `name` (given as `reference`) be built here without importing
    anything a file names? The book's; one registered in this process (a reference given again);
    or an installed one, for a record of that installed model (not a user's file of that name)."""
    if is_builtin(name) or is_registered(name):
        return True
    from ptm_func.nets.references import installed

    return name in installed() and (not reference or reference.startswith(f"{name} (installed"))


def require_rebuildable(name: str, reference: str | None, holder: str, again: str) -> None:
    """Refuse, in one line that says how to give it again, a user's model that `holder` (a
    checkpoint, a sweep) records but this process does not know: ptm imports no code a file names."""
    if rebuildable(name, reference):
        return
    raise ModelReferenceError(
        f"{holder} holds {printable(name)!r}, a model of your own ({printable(reference or '?')}); ptm "
        f"never imports code a file names: give it again ({again})"
    )


def is_known_model(name: str) -> bool:
    """The book's, registered in this process, or installed (an entry point: nothing imported)."""
    from ptm_func.nets.references import installed
    from ptm_func.nets.user import REGISTERED

    return name in _SPECS or name in REGISTERED or name in installed()


def reference_of_model(name: str) -> str:
    """How a user's model was given (FILE.py:ATTR, module:ATTR, an installed name), or ""."""
    from ptm_func.nets.user import REFERENCES

    return REFERENCES.get(name, "")


def registered_names() -> list[str]:
    """Users' models get_model knows: registered in this process, or installed."""
    from ptm_func.nets.references import installed
    from ptm_func.nets.user import REGISTERED

    return sorted(set(REGISTERED) | set(installed()))


def _to(tensors: dict[str, Tensor], device) -> dict[str, Tensor]:
    """Move a dict of tensors, keeping shared tensors shared."""
    moved: dict[int, Tensor] = {}
    for v in tensors.values():
        if id(v) not in moved:
            moved[id(v)] = v.to(device)
    return {k: moved[id(v)] for k, v in tensors.items()}
