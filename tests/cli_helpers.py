"""What the CLI tests share: invoke `ptm` in-process, and read its one error line."""

import re

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def invoke(*args, **extra):
    return runner.invoke(app, [str(a) for a in args], **extra)


def one_error_line(text: str, name: str | None = "ptm") -> str:
    """The single `NAME: error: ...` line of `text` (any NAME for None), asserting it is the only line."""
    (line,) = text.strip().splitlines()
    assert re.match(rf"{re.escape(name) if name else '[^ ]+'}: error: ", line), line
    return line
