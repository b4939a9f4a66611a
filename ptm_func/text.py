"""Text from files and users made safe to print: control characters escaped, names joined."""

from __future__ import annotations

import re

# C0 and C1 control characters and DEL: ESC sequences, carriage returns, newlines
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


LONGEST = 2000  # characters of one value in a message; a crafted file's megabytes are cut


def printable(text: object) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\n`), and its middle
    cut when it is longer than LONGEST characters."""
    text = str(text)
    if len(text) > LONGEST:
        text = f"{text[: LONGEST - 300]} ...({len(text) - LONGEST:,} characters cut)... {text[-300:]}"
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def names(items) -> str:
    """Comma-separated, each printable."""
    return ", ".join(printable(item) for item in items)
