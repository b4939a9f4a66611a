"""One-line errors instead of tracebacks: usage problems exit 2, runtime problems exit 1."""

from __future__ import annotations

import contextlib
import sys
import traceback

import typer

from ptm_func import errors
from ptm_func.text import printable

# Set by the app callback (`ptm --debug ...`).
DEBUG = {"enabled": False}


class UsageError(Exception):
    """A bad argument or option value (exit code 2)."""


USAGE_ERRORS = (UsageError, *errors.USAGE_ERRORS)
RUNTIME_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, RuntimeError, OSError)


@contextlib.contextmanager
def friendly_errors():
    """Turn library exceptions into `ptm: error: ...` on stderr and an exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except USAGE_ERRORS as err:
        _fail(err, 2)
    except RUNTIME_ERRORS as err:
        # torch's own RuntimeErrors are terse; point at the traceback for those
        _fail(err, 1, hint=type(err) is RuntimeError)
    except KeyboardInterrupt:
        typer.echo("ptm: interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as err:  # a bug of ours: still one line, the traceback with --debug
        _fail(err, 1, hint=True, prefix=f"internal error ({type(err).__name__}), please report: ")
    except SystemExit as err:  # ptm exits through typer.Exit: this came from a model's own code
        _fail(RuntimeError(f"sys.exit({err.code!r}) was called while ptm ran (by a model's own code?)"), 1)
    except GeneratorExit as err:  # a model's own code; other BaseExceptions (a kill) go through
        _fail(
            err, 1, hint=True, prefix=f"{type(err).__name__} raised while ptm ran (by a model's own code?): "
        )


def _fail(err: BaseException, code: int, hint: bool = False, prefix: str = ""):
    """One line on stderr (the traceback too with --debug), then exit with `code`."""
    if DEBUG["enabled"]:
        traceback.print_exception(err)
    suffix = " (ptm --debug ... shows the traceback)" if hint and not DEBUG["enabled"] else ""
    typer.echo(f"ptm: error: {prefix}{printable(err)}{suffix}", err=True)
    sys.stderr.flush()
    raise typer.Exit(code) from None
