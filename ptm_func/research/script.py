"""Run a research script's `main` with ptm's conventions for errors (examples/ use it)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from ptm_func.errors import USAGE_ERRORS


class ArgumentParser(argparse.ArgumentParser):
    """argparse with ptm's usage errors: one line `NAME: error: ...` on stderr, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def finite_float(text: str) -> float:
    """An argparse type: a float that is not NaN or infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def run_main(main: Callable[[], object], name: str | None = None) -> int:
    """Call `main()`; return the exit status: 0; 2 after one `NAME: error: ...` line on stderr
    for a usage error (files that do not go together: ptm_func.errors.USAGE_ERRORS); 1 after
    one such line for a missing or bad file or value (OSError, ValueError: checkpoints, data);
    130 on Ctrl-C. argparse's usage errors exit 2 on their own."""
    name = name or Path(sys.argv[0]).name
    try:
        main()
    except USAGE_ERRORS as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
