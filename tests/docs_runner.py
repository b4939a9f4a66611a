"""Sybil parsers that run the code blocks of README.md and the guide (docs/*.md).

- ```python blocks run in order in one namespace per page (Sybil's own parser; `>>>` blocks are
  doctests, their output checked);
- ```console blocks are sessions: each `$ command` runs (`ptm ...` and `python examples/...` in
  this process, anything else in bash) and what it prints must match the lines below it;
- ```bash blocks run line by line, their output unchecked, each line's exit status 0;
- a block whose info line names a file (```python title="my_nets.py"```) is written to that file;
- `<!-- test: ... -->` before a block says how it runs (docs/hooks/test_notes.py shows it on
  the site): `skip REASON`, `full-data` (the whole bundled CIFAR-2, numbers checked),
  `with --epochs 1 --trials 4` (option values replaced where the command gives them).

Output matching: a number standing alone matches any number (digits inside names, shapes and
paths are text), runs of spaces and of table rules match any width, a line `...` matches any
lines and `...` in a line any text; in a run cut short (`with`), consecutive lines of one shape
(epochs, table rows) match one or more. Under `full-data` whole numbers must be the shown ones
and fractions within TOLERANCE of them (CPU kernels round differently between machines). Times
(`1.66s`, `6,068 img/s`) are never compared. `ptm` runs through its entry point (cli/entry.py),
in this process; with `--nproc` it runs in bash, as its workers print from their own processes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sybil import Example, Region
from sybil.parsers.markdown import PythonCodeBlockParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, RawFencedCodeBlockLexer

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 0.005  # full-data numbers on another CPU: within 10 of 2,000 images
RUN_LANGUAGES = ("python", "console", "bash")

DIGITS = r"(?<![\w.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?"
NUMBER = DIGITS + r"(?![\w])"  # alone: digits inside names, shapes and paths are text
TIME = re.compile(rf"{DIGITS}\s?(?:s|ms|img/s)\b|{DIGITS} (?:min|h)\b")
RULES = "━─┃│┏┳┓┡╇┩└┴┘┌┬┐├┼┤╭╮╰╯═║"
RULE_RUN = re.compile(f"([{RULES}])\\1+")
INFO = re.compile(r'(?P<language>\w+)(?:\s+title="(?P<title>[^"]+)")?[^\n]*$\n', re.MULTILINE)


@dataclass
class Plan:
    """How the next block runs, from a `<!-- test: ... -->` directive."""

    skip: str = ""
    full_data: bool = False
    replace: dict[str, str] = field(default_factory=dict)


def parse_directive(text: str) -> Plan:
    plan = Plan()
    if text.startswith("skip"):  # the reason is the rest, semicolons and all
        plan.skip = text[4:].strip()
        if not plan.skip:
            raise ValueError("<!-- test: skip REASON -->: a skipped block says why")
        return plan
    for part in (p.strip() for p in text.split(";") if p.strip()):
        word, _, rest = part.partition(" ")
        if word == "full-data":
            plan.full_data = True
        elif word == "with":
            words = shlex.split(rest)
            plan.replace.update(zip(words[::2], words[1::2], strict=True))
        else:
            raise ValueError(f"unknown test directive {part!r}")
    return plan


class DirectiveParser:
    """`<!-- test: ... -->`: a plan for the block after it."""

    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="test", arguments=".+?")

    def __call__(self, document):
        for region in self.lexer(document):
            plan = parse_directive(region.lexemes["arguments"])
            yield Region(region.start, region.end, (plan, region.end), self.evaluate)

    @staticmethod
    def evaluate(example: Example) -> None:
        example.namespace["__plan__"] = example.parsed


def take_plan(example: Example) -> Plan:
    """The plan of the directive right above this block (only blank space between), if any."""
    plan, end = example.namespace.pop("__plan__", (Plan(), None))
    between = "" if end is None else example.document.text[end : example.region.start]
    if not re.fullmatch(r"\s*-*>?\s*", between):  # the directive's own `-->`, blank lines
        raise ValueError(f"line {example.line}: a test directive must stand right above its block")
    return plan


class BlockParser:
    """Fenced blocks: console sessions, bash lines, files; python goes to Sybil's parser."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.lexer = RawFencedCodeBlockLexer(info_pattern=INFO)
        self.python = PythonCodeBlockParser()

    def __call__(self, document):
        for region in self.lexer(document):
            language, title = region.lexemes["language"], region.lexemes["title"]
            source = region.lexemes["source"]
            if title:
                region.parsed, region.evaluator = (title, str(source)), self.write_file
            elif language in ("console", "bash"):
                region.parsed = str(source)
                region.evaluator = self.console if language == "console" else self.bash
            else:
                continue
            yield region
        for region in self.python(document):
            original = region.evaluator
            region.evaluator = self.planned(original)
            yield region

    def planned(self, evaluator):
        def evaluate(example: Example):
            plan = take_plan(example)
            if plan.skip:
                return None
            self.session.full_data = plan.full_data
            return evaluator(example)

        return evaluate

    def write_file(self, example: Example) -> None:
        take_plan(example)
        name, text = example.parsed
        Path(name).write_text(text)

    def bash(self, example: Example) -> str | None:
        plan = take_plan(example)
        if plan.skip:
            return None
        for command, _ in commands(example.parsed, shell=True):
            code, output = self.session.run(command, plan)
            if code != 0:
                return f"`{command}` exited {code}:\n{output}"
        return None

    def console(self, example: Example) -> str | None:
        plan = take_plan(example)
        if plan.skip:
            return None
        for command, expected in commands(example.parsed):
            code, output = self.session.run(command, plan)
            failing = any(line.startswith("ptm: error:") for line in expected)
            if (code != 0) != failing:
                return f"`{command}` exited {code}:\n{output}"
            printed = self.session.clean(output).splitlines()
            problem = compare(expected, printed, plan.full_data, cut=bool(plan.replace))
            if problem:
                return f"`{command}`: {problem}\n--- what it printed ---\n{output}"
        return None


def commands(text: str, shell: bool = False) -> list[tuple[str, list[str]]]:
    """A session's `$ command` lines with the output lines after each; in a shell block
    (`shell`) every line is a command. A trailing backslash continues a command."""
    found: list[tuple[str, list[str]]] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("$ ") or (shell and line.strip() and not line.lstrip().startswith("#")):
            command = line[2:] if line.startswith("$ ") else line
            while command.rstrip().endswith("\\"):
                command = command.rstrip()[:-1] + " " + next(lines).strip()
            found.append((command.strip(), []))
        elif found:
            found[-1][1].append(line)
    return found


def normalise(line: str, numbers: bool) -> str:
    line = TIME.sub("<time>", line)
    if not numbers:
        line = re.sub(NUMBER, "#", line)
    line = RULE_RUN.sub(r"\1", line)
    return re.sub(r"\s+", " ", line).strip()


def compare(expected: list[str], actual: list[str], full_data: bool, cut: bool = False) -> str | None:
    """None when `actual` matches the `expected` lines (see the module's docstring).

    In a run cut short by a directive (`cut`), a run of expected lines of one shape (epoch lines,
    table rows) matches one or more such lines: fewer epochs, a smaller search's fewer rows."""
    want = [normalise(line, numbers=full_data) for line in expected if line.strip()]
    got = [normalise(line, numbers=full_data) for line in actual if line.strip()]
    grouped: list[tuple[Pattern | None, bool]] = []  # (pattern, may repeat); None: any lines
    for index, line in enumerate(want):
        if line == "...":
            grouped.append((None, False))
        elif index and cut and line == want[index - 1]:
            grouped[-1] = (grouped[-1][0], True)
        else:
            grouped.append((compiled(line, full_data), False))
    if matches(grouped, got, 0, 0, {}):
        return None
    shown = "\n".join(want)
    return f"the output does not match the docs:\n--- the docs (normalised) ---\n{shown}\n" + (
        "--- the output (normalised) ---\n" + "\n".join(got)
    )


Pattern = tuple[re.Pattern[str], list[str]]  # a line's regex, and its numbers under full data


def compiled(expected: str, full_data: bool) -> Pattern:
    """A line's regex; under full data, the numbers it shows, to compare within TOLERANCE."""
    text = normalise(expected, numbers=full_data)
    regex, values = [], []
    for piece in re.split(rf"(\.\.\.|#|{NUMBER})", text):
        if piece == "...":
            regex.append(".*")
        elif re.fullmatch(NUMBER, piece or "x"):  # full_data: normalise kept the numbers
            regex.append(f"({NUMBER})")
            values.append(piece)
        else:
            regex.append(re.escape(piece))
    return re.compile("".join(regex)), values


def line_matches(pattern: Pattern, line: str) -> bool:
    regex, values = pattern
    found = regex.fullmatch(line)
    if found is None:
        return False
    return all(agree(got, shown) for got, shown in zip(found.groups(), values, strict=True))


def agree(got: str, shown: str) -> bool:
    """A whole number exactly; a fraction within TOLERANCE (another CPU rounds differently)."""
    if not re.search(r"[.e]", shown):
        return got == shown
    return abs(float(got.replace(",", "")) - float(shown.replace(",", ""))) <= TOLERANCE


def matches(patterns, lines: list[str], i: int, j: int, seen: dict) -> bool:
    """Whether patterns[i:] match lines[j:]: None matches any lines, a repeated one 1 or more."""
    if (i, j) in seen:
        return seen[i, j]
    pattern, repeated = patterns[i] if i < len(patterns) else (None, False)
    if i == len(patterns):
        result = j == len(lines)
    elif pattern is None:
        result = any(matches(patterns, lines, i + 1, k, seen) for k in range(j, len(lines) + 1))
    else:
        result = False
        k = j
        while k < len(lines) and line_matches(pattern, lines[k]):
            k += 1
            if matches(patterns, lines, i + 1, k, seen):
                result = True
                break
            if not repeated:
                break
    seen[i, j] = result
    return result


class Session:
    """One page's commands: its working folder, its fake home, how each command runs."""

    def __init__(self, folder: Path, data_dir: Path) -> None:
        self.folder, self.data_dir = folder, data_dir
        self.full_data = False

    def clean(self, output: str) -> str:
        output = output.replace(str(self.data_dir), "/home/you/.cache/ptm_func")
        return output.replace(str(self.folder) + os.sep, "").replace(str(self.folder), ".")

    def run(self, command: str, plan: Plan) -> tuple[int, str]:
        self.full_data = plan.full_data
        command = replace_options(command, plan.replace)
        words = expand(command, self.folder)
        in_process = not re.search(r"[|<>;&]", command) and "--nproc" not in words  # workers print
        if words and words[0] == "ptm" and in_process:
            return run_ptm(words[1:])
        if words[:1] == ["python"] and words[1].startswith("examples/") and in_process:
            return run_example(words[1], words[2:])
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run(
            ["bash", "-c", command], cwd=self.folder, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return done.returncode, done.stdout


def replace_options(command: str, replace: dict[str, str]) -> str:
    for option, value in replace.items():
        command = re.sub(rf"({re.escape(option)}[ =])\S+", rf"\g<1>{value}", command)
    return command


def expand(command: str, folder: Path) -> list[str]:
    """The words bash would pass (braces, globs, quotes), for commands run in this process."""
    if re.search(r"[|<>;&]", command):
        return shlex.split(command)
    done = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {command}"], cwd=folder, capture_output=True, text=True, check=True
    )
    return done.stdout.split("\0")[:-1]


def run_ptm(arguments: list[str]) -> tuple[int, str]:
    """`ptm ARGS` in this process, through the executable's entry point (its one-line errors)."""
    from cli import entry

    out = io.StringIO()
    saved = sys.argv, os.environ.get("COLUMNS")
    sys.argv, os.environ["COLUMNS"] = ["ptm", *arguments], "120"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            entry.main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved[0]
        if saved[1] is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved[1]
    return code, out.getvalue()


def run_example(script: str, arguments: list[str]) -> tuple[int, str]:
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            returned = module.main(arguments)  # examples return their results
            code = returned if isinstance(returned, int) else 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return code, out.getvalue()
