"""Run a research script's `main` with ptm's conventions for errors (examples/ use it)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def run_main(main: Callable[[], object], name: str | None = None) -> int:
    """Call `main()`; return the exit status: 0, 1 after one `NAME: error: ...` line on stderr
    for a missing or bad file or value (OSError, ValueError: checkpoints, data), 130 on Ctrl-C.
    argparse's usage errors exit 2 on their own."""
    name = name or Path(sys.argv[0]).name
    try:
        main()
    except (OSError, ValueError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
