"""Every code block of README.md and the guide runs, and prints what the page shows.

The pages run on small data: the bundled CIFAR-2 is cut to 1,000 training and 200 validation
images (drawn once, the same for every page), except for blocks marked `full-data`, whose
numbers are checked. Each page runs in a fresh working folder. See tests/docs_runner.py.
"""

import contextlib
import importlib.util
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from sybil import Document
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

from ptm_func.data import sources
from ptm_func.data.dataset import Dataset
from ptm_func.data.folders import ClassPick
from ptm_func.nets import references, user
from tests.conftest import write_image_folder
from tests.docs_runner import REPO, RUN_LANGUAGES, BlockParser, DirectiveParser, Session, parse_directive

PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if "api" not in p.parts)]
DIRECTIVE = re.compile(r"<!--\s*test:\s*(?P<arguments>.+?)\s*-->\s*$")


class Bundled(tuple):
    """(the whole bundled CIFAR-2, the slice the pages run on), with a short repr."""

    def __repr__(self) -> str:
        return "Bundled(whole, slice)"


@pytest.fixture(scope="module")
def bundled():
    whole = sources.load_bundled()
    small = Dataset(whole.train.sample(1000), whole.val.sample(200), whole.classes, whole.source)
    return Bundled((whole, small))


def small_bundled(session: Session, whole: Dataset, small: Dataset, original):
    def load(classes=None):
        pick = classes if isinstance(classes, ClassPick) else ClassPick(classes)
        if pick.choose(whole.classes, "the bundled CIFAR-2") != whole.classes:
            return original(classes)  # another order: decoded again, whole
        return whole if session.full_data else small

    return load


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_runs_as_shown(page, bundled, tmp_path, monkeypatch):
    session = Session(tmp_path, Path(os.environ["PTM_DATA_DIR"]))
    monkeypatch.setattr(sources, "load_bundled", small_bundled(session, *bundled, sources.load_bundled))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # `from my_nets import MyNet` after writing it
    archive = tmp_path / "ptm_func/data/bundled/cifar2.tar.gz"  # the README's tar command
    archive.parent.mkdir(parents=True)
    archive.symlink_to(sources.BUNDLED_ARCHIVE)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    others = write_image_folder(tmp_path / "tiny-others", {"train": 4, "test": 4})  # for fooling.py
    for split in ("train", "test"):
        shutil.copytree(others / split / "cat", others / split / "dog")
    document = Document.parse(str(page), DirectiveParser(), BlockParser(session))
    examples = list(document.examples())
    with models_registered_here():
        for example in examples:
            run(example, page)


@contextlib.contextmanager
def models_registered_here():
    """Models a page registers (`register_model`, references) stay on that page."""
    tables = (user.REGISTERED, user.REFERENCES, references.TARGETS)
    saved = [dict(table) for table in tables]
    try:
        yield
    finally:
        for table, entries in zip(tables, saved, strict=True):
            table.clear()
            table.update(entries)


def run(example, page: Path) -> None:
    """One block; PTM_DOCS_TIMES=1 prints how long each took (with pytest -s)."""
    started = time.perf_counter()
    example.evaluate()
    if os.environ.get("PTM_DOCS_TIMES"):
        print(f"{page.name}:{example.line}: {time.perf_counter() - started:.1f}s")


def blocks(page: Path):
    """(line number, info line, directive above it) of every fenced block of a page: any fence
    (``` or ~~~, any length), in a list, a quote or a tab, as Sybil's lexer finds them."""
    document = Document(page.read_text(), str(page))
    lexer = RawFencedCodeBlockLexer(info_pattern=re.compile(r"(?P<info>[^\n]*)$\n", re.MULTILINE))
    for region in lexer(document):
        before = document.text[: region.start].rstrip().rsplit("\n", 1)[-1].strip()
        directive = DIRECTIVE.match(before)
        line = document.text.count("\n", 0, region.start) + 1
        yield line, region.lexemes["info"].strip(), directive["arguments"] if directive else ""


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_block_is_run_or_says_why_not(page):
    """A block runs when its info line is exactly python, console or bash, or names a file."""
    for line, info, directive in blocks(page):
        runs = info in RUN_LANGUAGES or re.fullmatch(r'\w+ title="[^"]+"', info)
        assert runs or parse_directive(directive).skip, f"{page.name}:{line}: ```{info}: not run"
    text = page.read_text()
    assert not re.search(r"<!--\s*test(?!:)\b", text), f"{page.name}: a test directive without its colon"


def test_the_quick_start_is_what_ci_runs():
    """The README's two commands (not run here: installing is CI's first step) are CI's own."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("```bash\n", readme.index("## Quick start")) + 8 :].split("```")[0]
    setup, tests = block.strip().splitlines()
    install, main_job = setup.rsplit(" && ", 1)
    ci = (REPO / ".ci" / "run").read_text()
    assert install in ci and main_job == ".venv/bin/ptm train net"
    assert tests in ci.splitlines()


def test_every_directive_is_shown_to_the_reader():
    """docs/hooks/test_notes.py turns each directive the runner obeys into a note on the site."""
    spec = importlib.util.spec_from_file_location("test_notes", REPO / "docs/hooks/test_notes.py")
    assert spec and spec.loader
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    found = [d for page in PAGES for *_, d in blocks(page) if d]
    assert any(d.startswith("skip") for d in found) and any(d.startswith("with") for d in found)
    for directive in found:
        plan = parse_directive(directive)
        note = hook.note(directive)
        assert note, directive
        assert ("not run" in note) == bool(plan.skip)
        assert all(f"{option} {value}" in note for option, value in plan.replace.items())
