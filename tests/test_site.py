"""The guide as a reader sees it: built strictly, opened in headless Chromium at a laptop's and a
phone's width. Every page loads, every image shows, no internal link or anchor is broken, and
nothing but code blocks and tables scrolls sideways on a phone."""

import functools
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

REPO = Path(__file__).resolve().parent.parent
VIEWPORTS = {"laptop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def need(condition: bool, why: str) -> None:
    """Skip without it; in CI (.ci/run installs it all) fail instead of skipping quietly."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"CI must check the site: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site, served on loopback; yields its base URL."""
    need(shutil.which("mkdocs", path=Path(sys.executable).parent) is not None, "mkdocs is not installed")
    folder = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)]
    done = subprocess.run(build, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser():
    need(CHROMIUM is not None, "Chromium is not installed (Debian: apt-get install chromium)")
    need(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def pages(folder: Path) -> list[str]:
    """Every page of the built site, as paths relative to its root."""
    found = [p.relative_to(folder).as_posix() for p in folder.rglob("index.html")]
    return sorted(p.removesuffix("index.html") for p in found if not p.startswith(("assets/", "search/")))


LOOK = """() => ({
  images: [...document.images].map(
    i => ({src: i.currentSrc || i.src, width: i.naturalWidth, done: i.complete})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  title: document.title,
  wide: [...document.querySelectorAll('.md-content *')].filter(e => {
    const r = e.getBoundingClientRect();
    const scrolls = e.closest('pre, table, .md-typeset__scrollwrap, .tabbed-labels');
    return r.right > window.innerWidth + 1 && !scrolls;
  }).map(e => e.tagName + ' ' + (e.textContent || '').slice(0, 60)),
})"""


@pytest.mark.slow
@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_every_page_loads_with_its_images_and_links(site, browser, viewport):
    folder, base = site
    paths = pages(folder)
    assert {"", "chapter8/", "training/", "measurements/", "api/"} <= set(paths), paths
    page = browser.new_page(viewport=VIEWPORTS[viewport])
    seen, problems = {}, []
    for path in paths:
        response = page.goto(base + path, wait_until="load")
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        seen[base + path] = look = page.evaluate(LOOK)
        for image in look["images"]:
            if not image["done"] or image["width"] == 0:
                problems.append(f"{path}: image {image['src']} does not show")
        if viewport == "phone" and look["wide"]:
            problems.append(f"{path}: wider than a phone: {look['wide'][:3]}")
    for path, look in seen.items():
        for link in look["links"]:
            problems += broken(path, link, base, folder, seen)
    page.close()
    assert not problems, "\n".join(sorted(set(problems)))


def broken(page: str, link: str, base: str, folder: Path, seen: dict) -> list[str]:
    """Why an internal link of `page` is broken (missing file or anchor), or nothing."""
    if not link.startswith(base):
        return []  # another site: not ours to check offline
    target, anchor = urldefrag(urljoin(page, link))
    target = target.removesuffix("index.html")  # the page a reader lands on either way
    local = folder / urlparse(target).path.lstrip("/")
    if local.is_dir():
        local = local / "index.html"
    if not local.exists():
        return [f"{page}: link to a missing page {link}"]
    ids = seen.get(target, {}).get("ids")
    if anchor and ids is not None and anchor not in ids:
        return [f"{page}: link to a missing anchor {link}"]
    return []
