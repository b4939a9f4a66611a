"""The `ptm` executable: Ctrl-C before the CLI's own handling is in place (torch takes seconds
to import) ends with one line and exit 130, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


def load_app() -> Callable[[], object]:
    from .main import app

    return app


def main(load: Callable[[], Callable[[], object]] = load_app) -> None:
    try:
        app = load()
        app()
    except KeyboardInterrupt:
        print("ptm: interrupted", file=sys.stderr)
        sys.exit(130)
