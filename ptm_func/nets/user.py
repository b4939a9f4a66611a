"""Your own model, through every feature: pure functions or any nn.Module, as a ptm Model.

    model = model_from_functions(init, apply, name="mine")          # init(gen) / apply(...)
    model = model_from_module(MyNet, n_chans=8)                     # any nn.Module class
    @register_model("mine")                                         # get_model("mine", ...)
    def mine(n_chans=8, n_classes=2):
        return model_from_module(MyNet, n_chans=n_chans, n_classes=n_classes)

What ptm needs of a model is registry.ModelSpec. An nn.Module runs through
torch.func.functional_call: its parameters are the params, its buffers the state (BatchNorm's
running statistics come back as the new state, nothing is mutated); its dropout layers are
swapped, in ptm's own copy, for KeyedDropout layers whose masks come from fold_in(key, i) for
the i-th of them, as the book's nets draw theirs, so runs are reproducible and resume bit for
bit. The number of outputs is read off one probe image.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ptm_func.errors import ModelConfigError
from ptm_func.nets import rng
from ptm_func.nets.layers import Params, State, pools_as_selects
from ptm_func.nets.models import retie
from ptm_func.nets.registry import Model, ModelSpec

REGISTERED: dict[str, Callable[..., Model]] = {}
REFERENCES: dict[str, str] = {}  # name -> how to give it again (FILE.py:ATTR, module:ATTR), recorded
PROBE = (1, 3, 32, 32)  # one CIFAR image


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")  # a file name's stem: runs/NAME-seed123...


def check_name(name: Any) -> str:
    """A user's model name: letters, digits and . _ + - (it names files), not one of the book's."""
    from ptm_func.catalog import MODEL_NAMES

    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ModelConfigError(
            f"a model name is 1-100 letters, digits and . _ + - (it names files), got {name!r}"
        )
    if name in MODEL_NAMES:
        raise ModelConfigError(f"{name!r} is one of the book's models; name yours otherwise")
    return name


def register_model(name: str) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Decorator (timm-style): `get_model(name, **options)` calls the factory with the options;
    the factory returns a Model (model_from_functions or model_from_module)."""
    check_name(name)

    def decorate(factory: Callable[..., Model]) -> Callable[..., Model]:
        if not callable(factory):
            raise ModelConfigError(
                f"register_model({name!r}) decorates a factory, not a {type(factory).__name__}"
            )
        REGISTERED[name] = factory
        REFERENCES[name] = reference_of(factory)
        return factory

    return decorate


def registered(name: str) -> Callable[..., Model] | None:
    """`get_model`'s way to a registered factory: its options checked, its result a Model named `name`."""
    if name not in REGISTERED:
        from ptm_func.nets.references import use_installed

        if not use_installed(name):  # a package's entry point, if one adds `name`
            return None
    factory = REGISTERED[name]
    takes_classes = outputs_adjustable(Model(name))

    def build(**options: Any) -> Model:
        from ptm_func.nets.references import recordable

        options = {k: recordable(k, v) for k, v in options.items()}  # as a checkpoint gives them back
        asked = None if takes_classes else options.pop("n_classes", None)  # recorded, not an option
        try:
            model = factory(**options)
        except TypeError as err:  # an option the factory does not take
            raise ModelConfigError(f"{name}: {err}") from None
        if not isinstance(model, Model):
            raise ModelConfigError(f"{name}'s factory returned {type(model).__name__}, not a ptm Model")
        if asked is not None and asked != model.n_classes:
            raise ModelConfigError(f"{name} has {model.n_classes} outputs, not {asked}")
        return Model(name, {**options, "n_classes": model.n_classes}, model.spec)

    return build


def reference_of(factory: Callable[..., Any]) -> str:
    """How to name `factory` again: module:qualname, or FILE.py:qualname for a script's."""
    module = getattr(factory, "__module__", None) or "?"
    qualname = getattr(factory, "__qualname__", getattr(factory, "__name__", "?"))
    file = getattr(sys.modules.get(module), "__file__", None)
    if file and (module == "__main__" or module.startswith("ptm_user_")):  # a script, a FILE.py ref
        path = Path(file).resolve()
        module = str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)
    return f"{module}:{qualname}"


def model_from_functions(
    init: Callable[[torch.Generator], tuple[Params, State]],
    apply: Callable[..., tuple[Tensor, State]],
    *,
    name: str,
    module: Callable[[], nn.Module] | None = None,
    aliases: dict[str, str] | None = None,
    head: str = "fc2",
    summary: str = "",
) -> Model:
    """A Model from `init(generator) -> (params, state)` and `apply(params, state, x, *, train,
    key) -> (logits, new_state)`; `module()` builds its nn.Module twin, if it has one (its
    state_dict keys are the params' and state's)."""
    check_name(name)
    if not callable(init) or not callable(apply):
        raise ModelConfigError(f"{name}: init and apply must be functions")
    spec = ModelSpec(
        init=lambda gen, **_: init(gen),
        apply=lambda params, state, x, *, train, key=None, **_: apply(params, state, x, train=train, key=key),
        module=(lambda **_: module()) if module is not None else None,
        defaults={},
        book_class=name,
        summary=summary or f"{name} (pure functions)",
        aliases=(lambda **_: dict(aliases)) if aliases else None,
        head=head,
    )
    return _with_outputs(Model(name, {}, spec))


def model_from_module(
    factory: Callable[..., nn.Module], /, *, name: str | None = None, **kwargs: Any
) -> Model:
    """A Model of the nn.Module that `factory(**kwargs)` builds (a class or a function).

    init(seed) is the module built after torch.manual_seed(seed), as the book's twins are; its
    checkpoint loads into `factory(**kwargs)` with load_state_dict(strict=True).
    """
    label = check_name(name) if name is not None else _default_name(factory)
    template = _build(factory, kwargs, label)
    dropouts = _key_the_dropouts(template)
    aliases = _tied_names(template)  # alias -> owner: one tensor, in the checkpoint under both
    # the state: buffers, and parameters that do not train (frozen, or not floating point)
    frozen = {n for n, p in template.named_parameters(remove_duplicate=False) if not p.requires_grad}
    state_keys = {n for n, _ in template.named_buffers(remove_duplicate=False)} | frozen

    def init(gen: torch.Generator, **_: Any) -> tuple[Params, State]:
        with torch.random.fork_rng(devices=[]):  # the module built after torch.manual_seed(seed)
            torch.manual_seed(gen.initial_seed())
            built = _build(factory, kwargs, label)
        tensors = retie({k: v.detach().clone() for k, v in built.state_dict().items()}, aliases)
        return (
            {k: v for k, v in tensors.items() if k not in state_keys},
            {k: v for k, v in tensors.items() if k in state_keys},
        )

    def apply(params: Params, state: State, x: Tensor, *, train: bool, key=None, **_: Any):
        """Training mode without a key: BatchNorm trains, dropout is off (as recompute_running_stats
        wants); the training loop always gives one."""
        new_state = {k: v.clone() for k, v in state.items()}  # BatchNorm updates these in place
        # the i-th dropout's key goes in as its buffer: functional_call, no side effect to trace
        keys = {f"{n}.{KEY_BUFFER}": _layer_key(key, i, x) for i, n in enumerate(dropouts)}
        given = {k: v for k, v in {**params, **new_state}.items() if k not in aliases}  # tied: once
        with _mode(template, train, dropout=key is not None), pools_as_selects(x):
            out = functional_call(template, {**given, **keys}, (x,), strict=True)
        return out, new_state

    spec = ModelSpec(
        init=init,
        apply=apply,
        module=lambda **_: factory(**kwargs),
        defaults={},
        book_class=label,
        summary=f"{label}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) (an nn.Module)",
        aliases=(lambda **_: dict(aliases)) if aliases else None,
        head=_last_linear(template),
    )
    return _with_outputs(Model(label, dict(kwargs), spec))


def outputs_adjustable(model: Model) -> bool:
    """Can a user's model be built with any number of outputs (its factory takes n_classes)?"""
    factory = REGISTERED.get(model.name)
    try:
        return factory is not None and "n_classes" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


def with_classes(model: Model, n_classes: int) -> Model:
    """A user model with another number of outputs: its factory's `n_classes`, if it takes one."""
    if outputs_adjustable(model):
        build = registered(model.name)
        assert build is not None
        return build(**{**model.config, "n_classes": n_classes})
    raise ModelConfigError(
        f"{model.name} has {model.n_classes} outputs, not {n_classes}: give it {n_classes} "
        "(a factory registered with an n_classes option can be asked for any number)"
    )


def _with_outputs(model: Model) -> Model:
    """The model with its number of outputs in its config, read off one probe image, and
    whether it runs on channels-last images (ModelSpec.channels_last), read off another."""
    params, state = model.init(0)
    if not params:
        raise ModelConfigError(f"{model.name} has no parameters to train")
    image = torch.rand(PROBE, generator=torch.Generator().manual_seed(0))
    try:
        logits, _ = model.apply(params, state, image, train=False)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: BLE001 - any failure of user code is one line, sys.exit too
        raise ModelConfigError(
            f"{model.name} fails on a 3x32x32 image: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != 1 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ModelConfigError(
            f"{model.name} must give (N, classes) logits with 2 or more classes, got {shape}"
        )
    assert model.spec is not None
    spec = replace(model.spec, channels_last=_same_on_channels_last(model, params, state, image, logits))
    return Model(model.name, {**model.config, "n_classes": int(logits.shape[1])}, spec)


def _same_on_channels_last(model: Model, params: Params, state: State, image: Tensor, logits: Tensor) -> bool:
    """Does `model` give the same logits on the probe image stored channels-last? (The book's
    Net does not run at all: `out.view(-1, 8 * 8 * 8)` needs NCHW features.)"""
    if logits.is_meta:  # built on the meta device (shapes only): no values to compare
        return True
    batch = torch.cat([image, image.flip(-1)]).contiguous(memory_format=torch.channels_last)
    try:
        again, _ = model.apply(params, state, batch, train=False)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - it does not run: NCHW it is
        return False
    return isinstance(again, Tensor) and again.shape[0] == 2 and torch.allclose(again[:1], logits, atol=1e-5)


def _default_name(factory: Any) -> str:
    """The class's or function's name, made fit to name files (a lambda: "model")."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "", getattr(factory, "__name__", type(factory).__name__))[:100]
    name = name.lstrip("._+-") or "model"
    from ptm_func.catalog import MODEL_NAMES

    return f"{name}-user" if name in MODEL_NAMES else name


def _tied_names(module: nn.Module) -> dict[str, str]:
    """Parameters and buffers that are one tensor under several names: alias -> first name."""
    owners: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        if id(tensor) in owners:
            aliases[name] = owners[id(tensor)]
        else:
            owners[id(tensor)] = name
    return aliases


def _build(factory: Callable[..., nn.Module], kwargs: dict[str, Any], label: str) -> nn.Module:
    try:
        module = factory(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: BLE001 - user code: one line (sys.exit too)
        raise ModelConfigError(f"{label}({kwargs}) raised {type(err).__name__}: {err}") from None
    if not isinstance(module, nn.Module):
        raise ModelConfigError(f"{label} built a {type(module).__name__}, not an nn.Module")
    return module


def _last_linear(module: nn.Module) -> str:
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else ""


@contextlib.contextmanager
def _mode(module: nn.Module, train: bool, *, dropout: bool) -> Iterator[None]:
    """`module` in train or eval mode for one call; its keyed dropouts off unless `dropout`."""
    modes = [(m, m.training) for m in module.modules()]
    module.train(train)
    for m in module.modules():
        if isinstance(m, KeyedDropout) and not dropout:
            m.training = False
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


KEY_BUFFER = "ptm_key"  # a keyed dropout's key, a non-persistent buffer: in no state_dict


class KeyedDropout(nn.Module):
    """nn.Dropout or nn.Dropout1d/2d/3d whose mask is a pure function of its key buffer."""

    def __init__(self, p: float, channelwise: bool):
        super().__init__()
        self.p, self.channelwise = p, channelwise
        self.register_buffer(KEY_BUFFER, torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return keyed_dropout(x, self.p, getattr(self, KEY_BUFFER), channelwise=self.channelwise)


def _key_the_dropouts(module: nn.Module) -> list[str]:
    """Swap each dropout layer of `module` (our own copy) for a KeyedDropout; their names in order."""
    names = [n for n, m in module.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for name in names:
        old = module.get_submodule(name)
        assert isinstance(old, nn.modules.dropout._DropoutNd)
        parent, _, attr = name.rpartition(".")
        channelwise = isinstance(old, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d))
        setattr(module.get_submodule(parent), attr, KeyedDropout(float(old.p), channelwise))
    return names


def _layer_key(key: Tensor | None, index: int, x: Tensor) -> Tensor:
    """Layer `index`'s key: fold_in(key, index) (the book's NetDropout's), or a placeholder."""
    if key is None:  # eval mode: the layers pass their input through
        return torch.zeros((), dtype=torch.int64, device=x.device)
    return rng.fold_in(rng.key(key, x.device), index)


def keyed_dropout(x: Tensor, p: float, key: Tensor, *, channelwise: bool) -> Tensor:
    """Dropout whose mask is a pure function of `key` (one, or one per sample): whole channels
    (nn.Dropout2d: the book's NetDropout's masks, bit for bit) or single elements (nn.Dropout)."""
    if p == 0.0:
        return x
    key = rng.key(key, x.device)
    shape = (x.shape[1],) + (1,) * (x.dim() - 2) if channelwise else tuple(x.shape[1:])
    if key.dim() == 0:
        shape = (x.shape[0], *shape)
    keep = rng.uniform(key, shape, dtype=x.dtype) >= p
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))
