"""Text from files and users made safe to print: control characters escaped, names joined."""

from __future__ import annotations

import re

# C0 and C1 control characters and DEL: ESC sequences, carriage returns, newlines
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\n`)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


def names(items) -> str:
    """Comma-separated, each printable."""
    return ", ".join(printable(item) for item in items)
