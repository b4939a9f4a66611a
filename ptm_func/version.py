"""The package's version: one source, the installed metadata (pyproject's `version`).

Read by `ptm --version`, `ptm_func.__version__`, every run record and every checkpoint. Light:
no torch, so `ptm --version` answers as fast as `ptm --help`.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

UNKNOWN = "0+unknown"  # a checkout on sys.path that was never installed


@cache
def version() -> str:
    try:
        return metadata.version("ptm_func")
    except metadata.PackageNotFoundError:
        return UNKNOWN
