"""A tuning study as its storage holds it: the best trials, counts, a chart; settings files.

`ptm tune --show`, `ptm plot --study` and `ptm train --config` read what `run_tune` left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptm_func.errors import SettingsError
from ptm_func.reports.study_chart import study_chart
from ptm_func.runs import studies

DEFAULT_STORAGE = Path("runs") / "studies.journal"


@dataclass
class TuneReport:
    """What a study holds after this worker: its best trials, counts, and the best settings."""

    variant: str
    study: str
    storage: str  # without a password
    folder: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # best val accuracy first
    counts: dict[str, int] = field(default_factory=dict)  # trials by state
    trained_here: int = 0
    best_file: Path | None = None
    retrain: str | None = None  # the command that trains the best settings again
    interrupted: bool = False
    signal: int = 0


def summarize(study: Any, variant: str, storage: str, folder: Path, top: int = 10) -> TuneReport:
    """The study as its storage holds it: trials by state and the best ones."""
    op = studies.optuna()
    report = TuneReport(variant, study.study_name, studies.safe_url(storage), folder)
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        report.counts[trial.state.name.lower()] = report.counts.get(trial.state.name.lower(), 0) + 1
    done = [t for t in trials if t.state == op.trial.TrialState.COMPLETE and t.value is not None]
    for trial in sorted(done, key=lambda t: (-t.value, t.number))[:top]:
        report.rows.append(
            {
                "trial": trial.number,
                **trial.params,
                "val_accuracy": trial.value,
                "train_accuracy": trial.user_attrs.get("train_accuracy"),
                "epochs": trial.user_attrs.get("epochs"),
                "checkpoint": trial.user_attrs.get("checkpoint"),
            }
        )
    return report


def load(study: str, storage: str | None = None) -> Any:
    """Study `study` from its storage (SettingsError naming the studies it holds)."""
    op = studies.optuna()
    opened = studies.open_storage(storage, DEFAULT_STORAGE, must_exist=True)
    try:
        loaded = op.load_study(study_name=study, storage=opened)
    except KeyError:
        known = op.get_all_study_names(storage=opened)
        raise SettingsError(
            f"no study {study!r} in {studies.safe_url(storage or str(DEFAULT_STORAGE))}"
            + (f"; it holds: {', '.join(known)}" if known else "; it holds none")
        ) from None
    return loaded


def show_study(study: str, storage: str | None = None) -> TuneReport:
    """`ptm tune --show STUDY`: the study read from its storage, nothing trained."""
    loaded = load(study, storage)
    described = loaded.user_attrs.get("ptm") or {}
    folder = Path(described.get("folder", f"runs/tune-{study}"))
    return summarize(loaded, described.get("variant", "?"), storage or str(DEFAULT_STORAGE), folder)


def plot_study(study: str, storage: str | None = None, out: str | Path | None = None) -> Path:
    """`ptm plot --study STUDY`: its history and val accuracy against each parameter (a PNG,
    default STUDY-FOLDER/study.png)."""
    loaded = load(study, storage)
    described = loaded.user_attrs.get("ptm") or {}
    trials = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
         "epochs": t.user_attrs.get("epochs")}
        for t in loaded.get_trials(deepcopy=False)
    ]  # fmt: skip
    if not any(t["value"] is not None for t in trials):
        raise SettingsError(f"study {study!r} has no finished trial yet: nothing to draw")
    dims = (described.get("space") or {}).get("dimensions") or []
    logs = [d["name"] for d in dims if d.get("log")]
    folder = Path(described.get("folder", f"runs/tune-{study}"))
    title = f"study {study!r} of {described.get('variant', '?')}"
    return study_chart(trials, logs, Path(out) if out is not None else folder / "study.png", title)


def read_config(path: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A settings file (`ptm tune`'s best.json): its model, the settings run_training takes, and
    the data it was tuned on ({"data": --data or None, "classes": [...] or None})."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"--config {path}: no such file") from None
    except (OSError, ValueError) as err:
        raise SettingsError(f"--config {path} is not a readable settings file ({err})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
        raise SettingsError(f'--config {path} is not a settings file (no "model")')
    settings = spec.get("settings", {})
    if not isinstance(settings, dict):
        raise SettingsError(f'--config {path}: "settings" must be an object')
    if isinstance(settings.get("augment"), list):
        settings["augment"] = tuple(settings["augment"])
    data, classes = spec.get("data"), spec.get("classes")
    if not isinstance(data, (str, type(None))) or not (
        classes is None or (isinstance(classes, list) and all(isinstance(c, str) for c in classes))
    ):
        raise SettingsError(f'--config {path}: "data" must be a string and "classes" a list of names')
    return spec["model"], settings, {"data": data, "classes": classes}
