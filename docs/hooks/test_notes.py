"""mkdocs hook: show each `<!-- test: ... -->` directive (tests/docs_runner.py) as a note.

A reader sees how the tests run the block below: cut short, on the whole data, or not at all.
"""

import html
import re

DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)<!--\s*test:\s*(?P<arguments>.+?)\s*-->[ \t]*$", re.MULTILINE)


def note(arguments: str) -> str:
    if arguments.startswith("skip"):
        return f"not run by the tests: {html.escape(arguments[4:].strip())}"
    said = []
    for part in (p.strip() for p in arguments.split(";") if p.strip()):
        word, _, rest = part.partition(" ")
        if word == "full-data":
            said.append("run by the tests on the whole bundled CIFAR-2, its numbers checked")
        elif word == "with":
            said.append(f"run by the tests with <code>{html.escape(rest)}</code> on a 1,000-image slice")
    return "; ".join(said)


def on_page_markdown(markdown: str, **_) -> str:
    def replace(match: re.Match[str]) -> str:
        text = note(match["arguments"])
        return f'{match["indent"]}<p class="test-note">Tested: {text}.</p>\n' if text else ""

    return DIRECTIVE.sub(replace, markdown)
