"""TrainConfig (the book's defaults), the book's per-model setup, and the numbers a step takes as input."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

from ptm_func.catalog import BOOK_LR, TRAINABLE_NAMES, VARIANTS
from ptm_func.errors import UnknownModelError
from ptm_func.nets.registry import Model, get_model, registered_names
from ptm_func.training.augment import check_augmentations
from ptm_func.training.optim import SGD

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SEED_LIMIT = 2**63  # torch.Generator.manual_seed's range


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs; defaults are the book's (SGD lr 1e-2, batch 64, 100 epochs, seed 123)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-2
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    l2_lambda: float = 0.0  # the book's penalty on the loss; grad-equivalent to decay 2*l2
    l1_lambda: float = 0.0
    seed: int = 123  # init, shuffling and dropout keys all derive from it
    shuffle: bool = True  # the book's later variants trained with shuffle=False
    eval_train_mode: bool = False  # the book validated without model.eval()
    compile: bool | None = None  # None: CUDA always; CPU from CPU_COMPILE_EPOCHS (see will_compile)
    compile_mode: str | None = None  # None: "reduce-overhead" (CUDA graphs) on CUDA
    # K members: one vmapped step (True) or the single step member after member (False).
    # None: vmap on CUDA, where a step is launch-bound; a loop on CPU, where vmap's batched
    # conv and the layout copies around it cost ~2x per member (benchmarks/sweep_speed.py).
    members_vmap: bool | None = None
    # Images in channels-last memory order (tuning.py). None: on CPU, where it is ~1.2x faster.
    channels_last: bool | None = None
    # Validate every N epochs (0: after the last only). Read-only: the weights do not depend on it.
    eval_every: int = 1
    # Train-time augmentation inside the step (augment.py): () the book's, or flip and/or crop.
    augment: tuple[str, ...] = ()

    def __post_init__(self):
        self._check_types()
        if isinstance(self.augment, str) or not isinstance(self.augment, (list, tuple)):
            raise ValueError(f"augment must be a list of names, got {self.augment!r}")
        object.__setattr__(self, "augment", check_augmentations(self.augment))  # a JSON list, too
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        for name in ("lr", "momentum", "dampening", "weight_decay", "l2_lambda", "l1_lambda"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.l2_lambda < 0 or self.l1_lambda < 0:
            raise ValueError("l2 and l1 penalties must be >= 0")
        if not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be in 0..2**63-1, got {self.seed}")
        self.optimizer()  # momentum, weight decay, nesterov
        if self.eval_every < 0:
            raise ValueError(
                f"eval_every must be >= 0 (0: validate after the last epoch only), got {self.eval_every}"
            )

    def _check_types(self) -> None:
        """Each field of its type (a bool is not a number, 2.5 epochs are not whole); numpy's
        numbers become Python's, so the config records as JSON."""
        for name in ("epochs", "batch_size", "seed", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise ValueError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")
            object.__setattr__(self, name, int(value))
        for name in HYPER_KEYS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
            try:
                float(value)
            except OverflowError:  # 10**400: an int no float holds
                raise ValueError(
                    f"{name} must be a finite number, got an int of {len(str(value))} digits"
                ) from None
            if not isinstance(value, (int, float)):
                object.__setattr__(self, name, float(value))
        for name in ("nesterov", "shuffle", "eval_train_mode", "compile", "members_vmap", "channels_last"):
            value = getattr(self, name)
            optional = name in ("compile", "members_vmap", "channels_last")
            if not isinstance(value, bool) and not (optional and value is None):
                allowed = "True, False or None" if optional else "True or False"
                raise ValueError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}"
            )

    def validates_after(self, epoch: int) -> bool:
        """Is the val accuracy measured after `epoch` (1-based)? Every eval_every, and the last."""
        return epoch == self.epochs or (self.eval_every > 0 and epoch % self.eval_every == 0)

    def optimizer(self) -> SGD:
        return SGD(self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov)


def book_setup(name: str, **overrides: Any) -> tuple[Model, TrainConfig]:
    """Model and TrainConfig for a CLI name (l2 included) with the book's defaults."""
    if name not in TRAINABLE_NAMES:
        return _registered_setup(name, overrides)
    model_name, variant = VARIANTS.get(name, (name, {}))
    model_keys = ("n_chans1", "n_blocks", "tied", "n_classes")
    unknown = sorted(set(overrides) - set(model_keys) - {f.name for f in fields(TrainConfig)})
    if unknown:  # a typo (epoch=5) is an error, not a default silently kept
        known = ", ".join([f.name for f in fields(TrainConfig)] + list(model_keys))
        raise ValueError(f"unknown setting {', '.join(unknown)}; the settings are: {known}")
    overrides = dict(overrides)
    model_options = {k: overrides.pop(k) for k in model_keys if k in overrides}
    model = get_model(model_name, **model_options)
    defaults = {"lr": BOOK_LR.get(model_name, 1e-2), **variant}
    return model, TrainConfig(**{**defaults, **overrides})


def _registered_setup(name: str, overrides: dict[str, Any]) -> tuple[Model, TrainConfig]:
    """A model registered in this process (ptm_func.register_model): the settings that are not
    TrainConfig fields are its factory's options."""
    from ptm_func.nets.user import registered

    if registered(name) is None:
        known = ", ".join([*TRAINABLE_NAMES, *registered_names()])
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {known}, or give your own as FILE.py:ATTR or module:ATTR"
        )
    train_keys = {f.name for f in fields(TrainConfig)}
    model = get_model(name, **{k: v for k, v in overrides.items() if k not in train_keys})
    return model, TrainConfig(**{k: v for k, v in overrides.items() if k in train_keys})


HYPER_KEYS = ("lr", "momentum", "dampening", "weight_decay", "l2_lambda", "l1_lambda")


def hyperparameters(config: TrainConfig) -> dict[str, float]:
    """The numbers a step takes as input, in which the members of a sweep may differ.

    Dampening is 0 without momentum: torch.optim.SGD ignores it then, and a member whose
    momentum is a (vmapped) tensor 0 must step as its separate run would.
    """
    return {
        "lr": config.lr,
        "momentum": config.momentum,
        "dampening": config.dampening if config.momentum else 0.0,
        "weight_decay": config.weight_decay,
        "l2_lambda": config.l2_lambda,
        "l1_lambda": config.l1_lambda,
    }


def step_hyperparameters(
    configs: Sequence[TrainConfig], device, batched: bool = False
) -> dict[str, float | Tensor]:
    """The `hyper` input of K members' step: a float where all agree, else a (K,) tensor.

    Shared values stay Python floats, so a term every member skips (0) is not computed and a
    member steps exactly as its separate run; only what differs is batched by vmap. `batched`:
    every value a (K,) tensor (population-based training changes them as it goes).
    """
    values = [hyperparameters(c) for c in configs]
    return {
        key: values[0][key]
        if len({v[key] for v in values}) == 1 and not batched
        else torch.tensor([v[key] for v in values], dtype=torch.float32, device=device)
        for key in HYPER_KEYS
    }


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)
