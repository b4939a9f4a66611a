"""The `ptm` executable: errors are one line, whoever raises them.

Ctrl-C before the CLI's own handling is in place (torch takes seconds to import) ends with one
line and exit 130, not a traceback; click's usage errors (a bad value, an unknown option, a
missing argument) are `ptm: error: ...` and exit 2, not click's four-line block.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

try:  # typer vendors click from 0.2x on
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_errors


# click >= 8.2 raises this (a UsageError) for a group called without a command
NO_ARGS_HELP = getattr(click_errors, "NoArgsIsHelpError", ())


def load_app() -> Callable[..., object]:
    from .main import app

    return app


def main(load: Callable[[], Callable[..., object]] = load_app) -> None:
    try:
        app = load()
        code = app(standalone_mode=False)  # errors come back here instead of being printed
    except KeyboardInterrupt:
        print("ptm: interrupted", file=sys.stderr)
        sys.exit(130)
    except NO_ARGS_HELP as err:  # `ptm` or `ptm show` alone: the help, as click shows it
        err.show()
        sys.exit(2)
    except click_errors.UsageError as err:
        where = err.ctx.command_path if err.ctx is not None else "ptm"
        print(f"ptm: error: {one_line(err.format_message())} (see {where} --help)", file=sys.stderr)
        sys.exit(2)
    except click_errors.ClickException as err:
        print(f"ptm: error: {one_line(err.format_message())}", file=sys.stderr)
        sys.exit(err.exit_code)
    except typer.Abort:
        print("ptm: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def one_line(message: str) -> str:
    return " ".join(message.split())
