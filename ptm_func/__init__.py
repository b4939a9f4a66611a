"""ptm_func: the chapter-8 CNNs of "Deep Learning with PyTorch" as pure functions.

    from ptm_func import get_model
    model = get_model("res")
    params, state = model.init(seed=123)
    logits, state = model.apply(params, state, x, train=False)

The names below are the public surface; the subpackages (`nets`, `data`, `training`,
`files`, `research`, `reports`, `runs`) are the layers behind it, lowest first. Names load on
first use, so `import ptm_func` (and `ptm --help`) does not import torch. `__version__` is
the installed package's version (ptm_func.version).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_PUBLIC = {
    # the networks
    "MODEL_NAMES": "catalog",
    "TRAINABLE_NAMES": "catalog",
    "get_model": "nets.registry",
    "Model": "nets.registry",
    "retie": "nets.models",
    "functionalize": "nets.adapter",
    "FunctionalModule": "nets.adapter",
    # your own model
    "ModelSpec": "nets.registry",
    "model_from_functions": "nets.user",
    "model_from_module": "nets.user",
    "register_model": "nets.user",
    "use_model": "nets.references",
    "smallest_edits": "research.edits",
    **{name: "nets.modules" for name in ("Net", "NetWidth", "NetDropout", "NetBatchNorm", "NetDepth")},
    **{name: "nets.modules" for name in ("NetRes", "NetResDeep", "ResBlock")},
    # data
    "load_dataset": "data.sources",
    "load_trained_on": "data.sources",
    "Dataset": "data.dataset",
    "Split": "data.dataset",
    # training
    "TrainConfig": "training.config",
    "book_setup": "training.config",
    "SGD": "training.optim",
    "fit": "training.loop",
    "TrainState": "training.state",
    "TrainResult": "training.state",
    "EpochStats": "training.state",
    "evaluate": "training.evaluate",
    "augment": "training.augment",
    "AUGMENTATIONS": "catalog",
    "resolve_device": "training.devices",
    # files
    "save_checkpoint": "files.checkpoint",
    "load_checkpoint": "files.checkpoint",
    "Checkpoint": "files.checkpoint",
    "save_run": "files.resume",
    "load_run": "files.resume",
    # runs: what ptm train and ptm sweep do
    "run_training": "runs.training",
    "RunOutcome": "runs.training",
    "run_sweep": "runs.sweep_run",
    "SweepReport": "runs.sweep_run",
    "run_replicas": "runs.replicas",
    "ReplicasOutcome": "runs.replicas",
    "Reporter": "runs.reporter",
    "Silent": "runs.reporter",
    "run_tune": "runs.tune",
    "TuneReport": "runs.study_report",
    "show_study": "runs.study_report",
    "run_pbt": "runs.pbt",
    "PbtReport": "runs.pbt",
    "run_tuned_comparison": "runs.tuned_compare",
    # research
    "loss": "research.evaluation",
    "evaluate_split": "research.evaluation",
    "probabilities": "research.evaluation",
    "recompute_running_stats": "research.evaluation",
    "per_example_gradients": "research.per_example",
    "score_examples": "research.per_example",
    "interpolate": "research.landscape",
    "loss_line": "research.landscape",
    "average": "research.soup",
    "soup": "research.soup",
    "ensemble_probabilities": "research.ensemble",
    "ensemble_accuracy": "research.ensemble",
    # errors
    **{
        name: "errors"
        for name in (
            "SettingsError",
            "UnknownModelError",
            "ModelConfigError",
            "DataError",
            "ClassChoiceError",
            "DeviceError",
            "CheckpointError",
            "RecordError",
            "SweepError",
            "OutputInUse",
            "TrackerUnavailable",
        )
    },
}

# public name -> a module exposed whole
_MODULES = {"rng": "nets.rng"}

__all__ = sorted({*_PUBLIC, *_MODULES})  # pyright: ignore[reportUnsupportedDunderAll] - static tools read the TYPE_CHECKING imports below


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name == "__version__":
        from ptm_func.version import version

        return version()
    if name in _MODULES:
        value = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    elif name in _PUBLIC:
        value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    else:
        raise AttributeError(f"module 'ptm_func' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools and editors see
    from ptm_func.catalog import AUGMENTATIONS, MODEL_NAMES, TRAINABLE_NAMES
    from ptm_func.data.dataset import Dataset, Split
    from ptm_func.data.sources import load_dataset, load_trained_on
    from ptm_func.errors import (
        CheckpointError,
        ClassChoiceError,
        DataError,
        DeviceError,
        ModelConfigError,
        OutputInUse,
        RecordError,
        SettingsError,
        SweepError,
        TrackerUnavailable,
        UnknownModelError,
    )
    from ptm_func.files.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from ptm_func.files.resume import load_run, save_run
    from ptm_func.nets import rng
    from ptm_func.nets.adapter import FunctionalModule, functionalize
    from ptm_func.nets.models import retie
    from ptm_func.nets.modules import (
        Net,
        NetBatchNorm,
        NetDepth,
        NetDropout,
        NetRes,
        NetResDeep,
        NetWidth,
        ResBlock,
    )
    from ptm_func.nets.references import use_model
    from ptm_func.nets.registry import Model, ModelSpec, get_model
    from ptm_func.nets.user import model_from_functions, model_from_module, register_model
    from ptm_func.research.edits import smallest_edits
    from ptm_func.research.ensemble import ensemble_accuracy, ensemble_probabilities
    from ptm_func.research.evaluation import evaluate_split, loss, probabilities, recompute_running_stats
    from ptm_func.research.landscape import interpolate, loss_line
    from ptm_func.research.per_example import per_example_gradients, score_examples
    from ptm_func.research.soup import average, soup
    from ptm_func.runs.pbt import PbtReport, run_pbt
    from ptm_func.runs.replicas import ReplicasOutcome, run_replicas
    from ptm_func.runs.reporter import Reporter, Silent
    from ptm_func.runs.study_report import TuneReport, show_study
    from ptm_func.runs.sweep_run import SweepReport, run_sweep
    from ptm_func.runs.training import RunOutcome, run_training
    from ptm_func.runs.tune import run_tune
    from ptm_func.runs.tuned_compare import run_tuned_comparison
    from ptm_func.training.augment import augment
    from ptm_func.training.config import TrainConfig, book_setup
    from ptm_func.training.devices import resolve_device
    from ptm_func.training.evaluate import evaluate
    from ptm_func.training.loop import fit
    from ptm_func.training.optim import SGD
    from ptm_func.training.state import EpochStats, TrainResult, TrainState
