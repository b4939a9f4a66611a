"""What every worker of a study must agree on: what it searches, the data, the trials folder.

The first worker records each (in the study's attributes, and study.json in the folder); a
later one that differs is refused before it trains anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ptm_func.data.dataset import Dataset
from ptm_func.errors import SettingsError
from ptm_func.files import atomic, jsonio
from ptm_func.runs import studies
from ptm_func.runs.study_report import DEFAULT_STORAGE

OWNER_NAME = "study.json"  # the study whose trials a folder holds
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def claim_folder(folder: Path, name: str, storage: str | None) -> None:
    """A trials folder belongs to one study: a new study refuses one holding another's trials."""
    owner = {"study": name, "storage": studies.safe_url(storage or str(DEFAULT_STORAGE))}
    marker = folder / OWNER_NAME
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else None
    except (OSError, ValueError):
        recorded = {}
    if recorded is None and any(folder.glob("trial-*")):
        recorded = {}
    if recorded is not None and recorded != owner:
        theirs = f"study {recorded['study']!r} in {recorded['storage']}" if recorded else "another study"
        raise SettingsError(f"{folder} holds the trials of {theirs}; give another --out (or that study)")
    if recorded is None:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.atomic_write_text(marker, json.dumps(owner, indent=2) + "\n")


def check_same_study(study: Any, name: str, described: dict[str, Any]) -> None:
    """A study's first worker records what it searches; later ones must search the same."""
    recorded = study.user_attrs.get("ptm")
    if recorded is None:
        study.set_user_attr("ptm", json.loads(jsonio.dumps(described)))
        return
    mine = json.loads(jsonio.dumps(described))
    differ = [k for k in ("variant", "space", "settings", "folder") if recorded.get(k) != mine.get(k)]
    if differ:
        raise SettingsError(
            f"study {name!r} searches something else ({', '.join(differ)} differ); "
            "give the same command to continue it, or another --study"
        )


def data_argument(data: str | Path | None) -> str | None:
    """--data as given, a folder made absolute (best.json is read from anywhere)."""
    if data is None or str(data) in ("auto", "bundled", "cifar10"):
        return None if data is None else str(data)
    return str(Path(data).resolve()) if Path(data).exists() else str(data)


def check_same_data(study: Any, dataset: Dataset) -> None:
    """Every trial of a study trains on the same data: the first worker records its fingerprint."""
    recorded = study.user_attrs.get("data_fingerprint")
    if recorded is None:
        study.set_user_attr("data_fingerprint", dataset.fingerprint)
        study.set_user_attr("data_classes", list(dataset.classes))
    elif recorded != dataset.fingerprint:
        raise SettingsError(
            f"study {study.study_name!r} trains on other data ({study.user_attrs.get('data_classes')}); "
            "give the study's --data and --classes, or another --study"
        )
