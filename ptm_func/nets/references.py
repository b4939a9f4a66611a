"""Models named by reference: `FILE.py:ATTR`, `package.module:ATTR`, or a name that an installed
package adds through the `ptm_func.models` entry-point group (as uvicorn's `module:app`).

ATTR is an nn.Module class, a function returning an nn.Module or a ptm Model (`model_from_module`,
`model_from_functions`, a `@register_model` factory), or a Model. `use_model(REF)` imports what
REF names, registers it under a name (the `@register_model` name, the entry point's, else ATTR's
last part) and returns that name, which `get_model`, `run_training` and `run_sweep` then take.

ptm imports code only where the user names it (the command line's model argument, `--model`, a
package they installed). A checkpoint records its model's reference as text, and loading it
never imports anything: files/checkpoint.py asks for the reference to be given again.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import types
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, cast

from torch import nn

from ptm_func.catalog import MODEL_NAMES
from ptm_func.errors import ModelConfigError, ModelReferenceError
from ptm_func.nets.registry import Model
from ptm_func.nets.user import REFERENCES, REGISTERED, check_name, model_from_module

ENTRY_POINT_GROUP = "ptm_func.models"
TARGETS: dict[str, Any] = {}  # name -> what its reference named (the same again is no conflict)


def is_reference(text: str) -> bool:
    """`FILE.py:ATTR` or `module:ATTR` (a plain name is the book's, registered or installed)."""
    return ":" in text


def use_model(ref: str) -> str:
    """Import and register the model `ref` names; its name for get_model. A plain name is
    returned as it is (get_model finds the book's, registered and installed ones)."""
    if not isinstance(ref, str) or not ref.strip():
        raise ModelReferenceError(f"a model reference must be a name or FILE.py:ATTR, got {ref!r}")
    if not is_reference(ref):
        return ref
    where, _, attr = ref.rpartition(":")
    if not where or not attr:
        raise ModelReferenceError(f"{ref}: a reference is FILE.py:ATTR or package.module:ATTR")
    module = _import_file(where, ref) if _names_a_file(where) else _import_module(where, ref)
    target = _attribute(module, attr, ref)
    return register_target(target, _name_of(target, attr.rpartition(".")[2], ref), ref)


def installed() -> dict[str, EntryPoint]:
    """The models installed packages add (entry-point group `ptm_func.models`), by name; the
    book's names stay the book's."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {name: ep for name, ep in sorted(found.items()) if name not in MODEL_NAMES}


def use_installed(name: str) -> bool:
    """Register the installed model `name`, if a package adds one; False if none does."""
    ep = installed().get(name)
    if ep is None:
        return False
    try:
        target = ep.load()
    except BaseException as err:  # noqa: BLE001 - an installed package's code: one line
        if isinstance(err, KeyboardInterrupt):
            raise
        raise ModelReferenceError(
            f"the installed model {name} ({ep.value}) fails to load: {type(err).__name__}: {err}"
        ) from None
    reference = f"{name} (installed: {ep.value})"
    known_as = register_target(target, name, reference)
    if known_as != name:  # a @register_model factory of another name: the entry point's name too
        REGISTERED[name], REFERENCES[name] = REGISTERED[known_as], reference
    return True


def parse_model_args(pairs: list[str] | None) -> dict[str, Any]:
    """`--model-arg KEY=VALUE` pairs as the factory's keyword arguments. VALUE is a Python
    literal where it reads as one (5, 0.5, True, None, (5, 5), [1, 3]), else a string; tuples
    become lists, as they come back from the checkpoint's JSON."""
    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ModelReferenceError(f"--model-arg takes KEY=VALUE (KEY a Python name), got {pair!r}")
        if key in args:
            raise ModelReferenceError(f"--model-arg {key} is given twice")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = text
        args[key] = recordable(key, value)
    return args


def recordable(key: str, value: Any) -> Any:
    """`value` as the checkpoint's JSON gives it back (tuples as lists); refused if it has no
    JSON form (a set, bytes, an object)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise ModelReferenceError(
            f"model option {key}={value!r} cannot be recorded in a checkpoint: give numbers, "
            "strings, true/false, None, or lists of them"
        ) from None


def register_target(target: Any, name: str, ref: str) -> str:
    """Register `target` (see the module docstring) under `name`; `ref` is recorded with it.
    Another model under the same name in this process is refused: one name, one model."""
    try:
        check_name(name)
    except ModelConfigError as err:
        raise ModelReferenceError(f"{ref}: {err}") from None
    registered_as = [n for n, f in REGISTERED.items() if f is target]
    if registered_as:  # a @register_model factory: already known under its name
        name = registered_as[0]
    elif TARGETS.get(name, target) is not target:
        raise ModelReferenceError(
            f"{ref} and {REFERENCES[name]} are both named {name!r}: one name, one model (rename one, "
            "or give a function that returns model_from_module(..., name=...))"
        )
    else:
        REGISTERED[name], TARGETS[name] = _factory(target, name, ref), target
    REFERENCES[name] = ref
    return name


def _factory(target: Any, name: str, ref: str) -> Callable[..., Model]:
    """A factory for get_model: options in, a ptm Model out."""
    if isinstance(target, Model):

        def fixed(**options: Any) -> Model:
            if options:
                raise ModelReferenceError(
                    f"{ref} is a Model already: it takes no options ({', '.join(options)})"
                )
            return target

        return fixed
    if isinstance(target, nn.Module):
        raise ModelReferenceError(
            f"{ref} is an nn.Module instance: give its class, or a function that builds it (ptm builds "
            "one per seed)"
        )
    if isinstance(target, type) and issubclass(target, nn.Module):

        def from_class(**options: Any) -> Model:
            return model_from_module(target, name=name, **options)

        from_class.__signature__ = inspect.signature(target)  # type: ignore[attr-defined]
        return from_class
    if isinstance(target, type) or not callable(target):
        raise ModelReferenceError(
            f"{ref} is a {type(target).__name__}, not a model: give an nn.Module class, a function "
            "that returns an nn.Module or a ptm Model, or a Model"
        )

    def from_function(**options: Any) -> Model:
        built = _call(target, options, ref)
        if isinstance(built, Model):
            return built
        if isinstance(built, nn.Module):  # it builds modules: one per seed, as a class would
            return model_from_module(cast(Callable[..., nn.Module], target), name=name, **options)
        raise ModelReferenceError(f"{ref} returned a {type(built).__name__}, not an nn.Module or a ptm Model")

    try:
        from_function.__signature__ = inspect.signature(target)  # type: ignore[attr-defined]
    except (TypeError, ValueError):  # a builtin without one: any options go through
        pass
    return from_function


def _call(target: Callable[..., Any], options: dict[str, Any], ref: str) -> Any:
    try:
        return target(**options)
    except TypeError as err:  # an option it does not take
        raise ModelReferenceError(f"{ref}: {err}") from None
    except Exception as err:  # noqa: BLE001 - user code: one line
        raise ModelReferenceError(f"{ref}({options}) raised {type(err).__name__}: {err}") from None


def _name_of(target: Any, attr: str, ref: str) -> str:
    if isinstance(target, Model):
        return target.name
    return attr


def _names_a_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _import_file(where: str, ref: str) -> types.ModuleType:
    """Run FILE.py as a module of its own (its folder on sys.path, as for a script)."""
    path = Path(where).expanduser()
    if path.suffix != ".py":
        raise ModelReferenceError(f"{ref}: {where} is not a .py file")
    if not path.is_file():
        raise ModelReferenceError(f"{ref}: no file {where}")
    path = path.resolve()
    name = f"ptm_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:  # imported already in this process: the same module
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelReferenceError(f"{ref}: {where} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    _run_file(module, spec.loader, ref, where)
    return module


def _import_module(where: str, ref: str) -> types.ModuleType:
    """Import package.module, from the working folder first (as uvicorn does)."""
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as err:
        if err.name is not None and (where == err.name or where.startswith(err.name + ".")):
            raise ModelReferenceError(
                f"{ref}: no module named {where!r} (run ptm from the folder that holds it, or pip "
                "install it; a file is FILE.py:ATTR)"
            ) from None
        raise _import_failed(err, ref, where) from None
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: BLE001 - a user's import: one line, SystemExit too
        raise _import_failed(err, ref, where) from None


def _run_file(module: types.ModuleType, loader: Any, ref: str, where: str) -> None:
    try:
        loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: BLE001 - a user's file: one line, SystemExit too
        sys.modules.pop(module.__name__, None)
        raise _import_failed(err, ref, where) from None


def _import_failed(err: BaseException, ref: str, where: str) -> ModelReferenceError:
    return ModelReferenceError(f"{ref}: importing {where} raised {type(err).__name__}: {err}")


def _attribute(module: types.ModuleType, attr: str, ref: str) -> Any:
    """`module.attr` (dots allowed: Outer.factory), never through another module: a reference
    stays inside the file or module the user gave (`file.py:os.system` is refused)."""
    target: Any = module
    for part in attr.split("."):
        if not part.isidentifier():
            raise ModelReferenceError(f"{ref}: {attr!r} is not an attribute name")
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ModelReferenceError(f"{ref}: {_where(ref)} has no attribute {part!r}") from None
        if isinstance(target, types.ModuleType):
            raise ModelReferenceError(
                f"{ref}: {part} is a module: a reference names a model inside {_where(ref)}, not elsewhere"
            )
    return target


def _where(ref: str) -> str:
    return ref.rpartition(":")[0]
