"""The book builds from scratch with zero warnings, and every page holds up in a real browser.

The tests share one from-scratch build (``book_build`` in conftest.py). The browser test
serves the built site on 127.0.0.1 and opens every page in Debian's headless Chromium
through Playwright; it saves a screenshot of each page in ``_build/test-artifacts/book/``.
The published site (a base URL set: the sitemap, the 404 page under a sub-path, as GitHub
Pages serves a project's site) is a second build of the same sources, its outputs from the
first build's execution cache.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit
from xml.etree import ElementTree

import nbformat
import pytest
from bs4 import BeautifulSoup

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[1]
from autograder.course.spec import ASSIGNMENTS  # noqa: E402

ARTIFACTS = REPO / "_build" / "test-artifacts" / "book"


def chapter_names() -> list[str]:
    """Every page of the book, from _toc.yml, as paths like ``book/batch-mean``."""
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    names = [toc["root"]]
    for part in toc.get("parts", [toc]):
        for chapter in part.get("chapters", []):
            names.append(chapter["file"])
    return names


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------


# ipykernel >= 7 logs this line to its own stderr whenever a kernel is started over local TCP
# (which is how myst-nb starts every kernel; it offers no setting for IPC or CurveZMQ). It is
# the kernel's start-up notice, not a warning about the book, and it passes through -W.
_KERNEL_TRANSPORT_NOTICE = re.compile(r"\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption")
# ipykernel's shutdown race: a kernel asked to stop flushes stderr after its iopub socket is
# closed and logs the failed send (tornado's "Uncaught exception in ZMQStream callback", ending in
# "ZMQError: Socket operation on non-socket"). It is printed by a kernel whose notebook has
# finished, says nothing of the book, and comes and goes between runs; only this exact block is excused.
_KERNEL_SHUTDOWN_RACE = re.compile(
    r"^ERROR:tornado\.general:Uncaught exception in ZMQStream callback\n"
    r"Traceback \(most recent call last\):\n(?:[ \t].*\n)+"
    r"zmq\.error\.ZMQError: Socket operation on non-socket$",
    flags=re.M,
)


def test_book_builds_from_scratch_without_warnings(book_build):
    assert book_build.returncode == 0, f"jupyter-book build failed:\n{book_build.log[-6000:]}"
    problems = [
        line
        for line in _KERNEL_SHUTDOWN_RACE.sub("", book_build.log).splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", line)
        and not _KERNEL_TRANSPORT_NOTICE.search(line)
    ]
    assert not problems, "the build printed warnings or errors:\n" + "\n".join(problems)


def test_every_chapter_is_built_and_its_code_executed(book_build):
    for name in chapter_names():
        page = book_build.html / f"{name}.html"
        assert page.is_file(), f"{name} is in _toc.yml but was not built"
    executed = book_build.root / "_build" / "jupyter_execute" / "book"
    notebooks = sorted(p.stem for p in executed.glob("*.ipynb"))
    assert len(notebooks) >= 10, f"expected the chapters' notebooks to be executed, got {notebooks}"
    for path in executed.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            assert cell.execution_count is not None, f"{path.name}: a code cell did not run"
            for out in cell.get("outputs", []):
                assert out.output_type != "error", f"{path.name}: a cell raised {out.get('ename')}"


def test_math_is_served_by_the_site_itself(book_build):
    mathjax = book_build.html / "_static" / "mathjax" / "es5" / "tex-chtml.js"
    assert mathjax.is_file(), "MathJax was not copied into the built site"
    page = (book_build.html / "book" / "batch-mean.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    mathjax_scripts = [s for s in scripts if "mathjax" in s.lower() or "tex-" in s]
    assert mathjax_scripts, "the page loads no MathJax"
    assert all(not s.startswith(("http:", "https:", "//")) for s in mathjax_scripts), mathjax_scripts
    # the book's own _static/ must not hold MathJax: Jupyter Book would inject every .js there
    assert not (REPO / "_static").exists()


# --------------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A browser that stops reading (it aborts a request once a page is done) is fine."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _PagesHandler(_QuietHandler):
    """GitHub Pages' rules for a project's site: it lives under ``/<repository>/``, and an
    address it does not have is answered with its ``404.html``, status 404."""

    prefix = "/"

    def translate_path(self, path):
        if not urlsplit(path).path.startswith(self.prefix):
            return ""  # outside the site: not found
        return super().translate_path(path[len(self.prefix) - 1:])

    def send_error(self, code, message=None, explain=None):
        page = Path(self.directory) / "404.html"
        if code != 404 or not page.is_file():
            return super().send_error(code, message, explain)
        body = page.read_bytes()
        self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@contextlib.contextmanager
def _serving(folder: Path, prefix: str = "/"):
    """``folder`` served on 127.0.0.1 under ``prefix`` by a thread; yields the site's URL."""
    handler = functools.partial(type("Handler", (_PagesHandler,), {"prefix": prefix}), directory=str(folder))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def site(book_build):
    """The built site, served on 127.0.0.1 by a thread; yields its base URL."""
    if book_build.returncode != 0:
        pytest.fail("the book did not build; see test_book_builds_from_scratch_without_warnings")
    with _serving(book_build.html) as url:
        yield url


def _watch(page, errors: list[str], expected: str | None = None) -> None:
    """Record on ``errors`` every console error, script error, failed request and HTTP status
    >= 400 of any resource the page loads (``expected``: a URL whose error status is the point)."""
    def on_console(message):
        if message.type != "error":
            return
        where = (message.location or {}).get("url", "")
        if where == expected and message.text.startswith("Failed to load resource"):
            return  # Chromium's own note of the error status that was asked for
        errors.append(f"console: {message.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda e: errors.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed ({r.failure}): {r.url}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 and r.url != expected else None)


def _browser(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def _only_local(site: str, outside: list[str]):
    """A route handler: requests inside ``site`` go through, any other is refused and noted."""
    def handle(route):
        url = route.request.url
        if url.startswith(site) or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    return handle


def _ids_in(html: str) -> set[str]:
    soup = BeautifulSoup(html, "html.parser")
    return {tag["id"] for tag in soup.find_all(id=True)} | {
        tag["name"] for tag in soup.find_all("a", attrs={"name": True})
    }


# What every page must show once MathJax has finished.
_PAGE_REPORT = """() => {
  const maths = Array.from(document.querySelectorAll('.math'));
  const unrendered = maths.filter(m => !m.querySelector('mjx-container'))
                          .map(m => m.textContent.slice(0, 80));
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight')
       .forEach(e => e.remove());
  const text = clone.textContent;
  const raw = (text.match(/\\\\[\\(\\[]/g) || []).length;
  // TeX that MathJax never saw: a math span broken by the markdown around it
  const tex = (text.match(/\\$|\\\\(frac|sum|hat|mu|sigma|varepsilon|partial|gamma|beta|sqrt)\\b/g) || []);
  // display equations wider than the text column (cut off on the page)
  const wide = Array.from(document.querySelectorAll('mjx-container[display="true"]')).filter(c => {
      const m = c.querySelector('mjx-math');
      return m && m.getBoundingClientRect().width > c.getBoundingClientRect().width + 2;
  }).map(c => (c.closest('section') || {}).id);
  const images = Array.from(document.images).map(i => ({
      src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
  // every picture in a chapter is a figure with a caption and alt text
  const bare = Array.from(document.querySelectorAll('article img')).filter(i => {
      const f = i.closest('figure');
      return !f || !f.querySelector('figcaption') || !i.getAttribute('alt');
  }).map(i => i.getAttribute('src'));
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
  const icons = Array.from(document.querySelectorAll('link[rel~="icon"]')).map(l => l.href);
  const logos = document.querySelectorAll('img.logo__image').length;
  return {maths: maths.length, unrendered, raw, tex, wide, images, bare, links, icons, logos};
}"""


def test_every_page_renders_in_chromium(book_build, site):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages = sorted(
        p.relative_to(book_build.html).as_posix()
        for p in book_build.html.rglob("*.html")
        if not p.relative_to(book_build.html).as_posix().startswith(("_static/", "_sources/"))
    )
    assert "book/batch-mean.html" in pages
    failures: list[str] = []
    outside: list[str] = []
    links: set[str] = set()
    icons: set[str] = set()
    math_pages = 0
    with sync_playwright() as pw:
        browser = _browser(pw)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", _only_local(site, outside))
        for rel in pages:
            page = context.new_page()
            errors: list[str] = []
            _watch(page, errors)
            response = page.goto(site + rel, wait_until="load")
            if response is None or response.status != 200:
                failures.append(f"{rel}: HTTP {response and response.status}")
                page.close()
                continue
            if rel == "index.html":  # a redirect to the first chapter; screenshotting it hangs
                page.close()
                continue
            page.wait_for_function(
                "() => !document.querySelector('.math') || "
                "(window.MathJax && MathJax.startup && MathJax.startup.promise)",
                timeout=30_000,
            )
            page.evaluate(
                "() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null"
            )
            report = page.evaluate(_PAGE_REPORT)
            if report["maths"]:
                math_pages += 1
            if report["unrendered"]:
                failures.append(f"{rel}: equations not rendered by MathJax: {report['unrendered'][:3]}")
            if report["raw"]:
                failures.append(f"{rel}: {report['raw']} raw \\( or \\[ left in the text")
            if report["tex"]:
                failures.append(f"{rel}: TeX outside math in the text: {report['tex'][:5]}")
            if report["wide"]:
                failures.append(f"{rel}: equations wider than the page, in sections {report['wide']}")
            if report["bare"]:
                failures.append(f"{rel}: images without a captioned figure or alt text: {report['bare']}")
            bad_images = [i["src"] for i in report["images"] if not i["ok"]]
            if bad_images:
                failures.append(f"{rel}: images did not load: {bad_images}")
            if not report["icons"]:
                failures.append(f"{rel}: no favicon declared (browsers then ask for /favicon.ico: a 404)")
            if not report["logos"]:
                failures.append(f"{rel}: no logo in the sidebar")
            links.update(report["links"])
            icons.update(report["icons"])
            # JPEG: full-page PNGs of the chapters took 1.8 times as long (34 s against 19 s in all)
            page.screenshot(path=str(ARTIFACTS / (rel.replace("/", "__") + ".jpg")), full_page=True,
                            type="jpeg", quality=80)
            page.close()
            # after the screenshot: a request that fails late (a font, a lazy image) counts too
            if errors:
                failures.append(f"{rel}: console errors or failed requests: {errors}")
        browser.close()
    assert not outside, f"pages requested resources outside the site: {sorted(set(outside))[:10]}"
    assert math_pages >= 5, "expected MathJax-rendered equations on the chapters"
    assert not failures, "\n".join(failures)
    # every internal link resolves: the file exists, and so does the #anchor it names
    ids_cache: dict[Path, set[str]] = {}
    broken = []
    for url in sorted(links):
        if not url.startswith(site):
            continue
        parts = urlsplit(url)
        target = book_build.html / unquote(parts.path[len(urlsplit(site).path):])
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(url)
            continue
        if parts.fragment and target.suffix == ".html":
            ids = ids_cache.setdefault(target, _ids_in(target.read_text(errors="replace")))
            if unquote(parts.fragment) not in ids:
                broken.append(url)
    assert not broken, f"internal links that do not resolve: {broken[:20]}"
    shots = list(ARTIFACTS.glob("*.jpg"))
    assert len(shots) >= len(chapter_names()), "a screenshot is missing"
    # the favicon every page declares is one file, a real icon with a 16 px image
    assert len(icons) == 1, f"the pages declare different favicons: {sorted(icons)}"
    _assert_is_the_favicon(_served(site, icons.pop()))


def _assert_is_the_favicon(body: bytes) -> None:
    import io

    from PIL import Image

    icon = Image.open(io.BytesIO(body))
    assert icon.format == "ICO", icon.format
    assert (16, 16) in icon.ico.sizes(), icon.ico.sizes()


def test_an_unknown_address_is_answered_by_the_404_page(book_build, site):
    from urllib.error import HTTPError
    from urllib.request import urlopen

    with pytest.raises(HTTPError) as missing:
        urlopen(urljoin(site, "book/no-such-chapter.html"), timeout=30)
    assert missing.value.code == 404
    body = missing.value.read().decode()
    assert "<title>Page not found" in body and "is not a page of the book" in body, body[:2000]
    # its links are absolute (it is served at whatever address was not found)
    hrefs = re.findall(r'(?:href|src)="([^"#]+)"', body)
    relative = [h for h in hrefs if not h.startswith(("/", "http:", "https:"))]
    assert not relative, f"the 404 page has relative links, broken at any other depth: {relative[:10]}"


def test_sitemap_follows_the_configured_base_url(book_build):
    """With ``html.baseurl`` (or $BN_BOOK_URL) set, the build writes a sitemap under it; without, none."""
    url = _site_address().base_url(_configured_base_url())
    sitemap = book_build.html / "sitemap.xml"
    if url:
        assert _sitemap_urls(sitemap) == {url + name + ".html" for name in chapter_names()}
    else:
        assert not sitemap.exists(), "a sitemap without a base URL would list URLs nobody serves"
        assert "no html.baseurl" in book_build.log, "the build should say why it wrote no sitemap"


def _site_address():
    """The book's Sphinx extension book/_ext/site_address.py, imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("site_address", REPO / "book" / "_ext" / "site_address.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _configured_base_url() -> str:
    import yaml

    config = yaml.safe_load((REPO / "_config.yml").read_text())
    return str((config.get("html") or {}).get("baseurl") or "")


def _sitemap_urls(path: Path) -> set[str]:
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    root = ElementTree.parse(path).getroot()
    return {loc.text for loc in root.findall("s:url/s:loc", ns)}


def _served(site: str, path: str) -> bytes:
    from urllib.request import urlopen

    with urlopen(urljoin(site, path), timeout=30) as response:
        assert response.status == 200
        return response.read()


def test_chapter_download_is_a_real_notebook(book_build, site):
    page = (book_build.html / "book" / "batch-mean.html").read_text()
    hrefs = re.findall(r'href="([^"]+\.ipynb)"', page)
    sources = [h for h in hrefs if "_sources" in h]
    assert sources, "the chapter has no .ipynb download button"
    nb = nbformat.reads(_served(site, urljoin("book/", sources[0])).decode(), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and any(c.outputs for c in code), "the downloaded notebook has no executed code"


def test_student_notebook_links_return_the_released_notebooks(book_build, site, student_release):
    page = (book_build.html / "book" / "assignments.html").read_text()
    for a in ASSIGNMENTS:
        hrefs = re.findall(rf'href="([^"]*/{re.escape(a)}\.ipynb)"', page)
        assert hrefs, f"the assignments page does not link {a}.ipynb"
        body = _served(site, urljoin("book/", hrefs[0]))
        nb = nbformat.reads(body.decode(), as_version=4)
        nbformat.validate(nb)
        released = (student_release / a / f"{a}.ipynb").read_bytes()
        assert json.loads(body) == json.loads(released), f"the book's {a}.ipynb is not the release"


# --------------------------------------------------------------------------------------------
# The execution cache
# --------------------------------------------------------------------------------------------


def test_unchanged_rebuild_runs_no_notebook_and_keeps_the_outputs(book_build):
    """A second build of unchanged sources takes every output from the cache.

    It rebuilds a copy of the session's build (so the other tests keep theirs) with the same
    command. No notebook may be executed again, the pages' .ipynb downloads must still carry
    their outputs (myst-nb alone would write them without), and the rebuild must be much
    faster than the build (a wide margin: the goal, 10 %, is measured by tests/bench_book.py).
    """
    import shutil
    import subprocess
    import sys
    import time

    assert book_build.returncode == 0
    executed = len(re.findall(r"Executed notebook in", book_build.log))
    assert executed >= 10, "the first build should have executed the chapters"
    copy = book_build.root.with_name("test-book-rebuild")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(book_build.root, copy, symlinks=True)
    try:
        start = time.perf_counter()
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "jupyter-book"), "build", "--all", "-W", "--keep-going",
             "--path-output", str(copy), "."],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )
        seconds = time.perf_counter() - start
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-4000:]
        assert "Executing notebook" not in log, "an unchanged notebook was executed again"
        assert len(re.findall(r"Using cached notebook", log)) == executed
        nb = nbformat.read(copy / "_build" / "html" / "_sources" / "book" / "batch-mean.ipynb", as_version=4)
        assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "download lost its outputs"
        assert seconds < 0.5 * book_build.seconds, (seconds, book_build.seconds)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The published site: a base URL, served under a sub-path as GitHub Pages serves a project
# --------------------------------------------------------------------------------------------

PUBLISHED_URL = "https://bn-course.example/course/"


@dataclass
class Published:
    """The book rebuilt with ``BN_BOOK_URL`` = :data:`PUBLISHED_URL`, and served under ``/course/``."""

    html: Path
    log: str
    site: str  #: where the test serves it: http://127.0.0.1:<port>/course/


@pytest.fixture(scope="module")
def published(book_build):
    """The same sources built as the publishing workflow builds them, with a base URL.

    Into ``_build/test-book-published``, from a copy of the session build's execution cache
    (so no notebook runs again), with ``-W``; served under the base URL's path, where an
    unknown address gets the 404 page with status 404, as on GitHub Pages.
    """
    if book_build.returncode != 0:
        pytest.fail("the book did not build; see test_book_builds_from_scratch_without_warnings")
    root = book_build.root.with_name("test-book-published")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(book_build.root / "_build" / ".jupyter_cache", root / "_build" / ".jupyter_cache")
    env = dict(os.environ, BN_BOOK_URL=PUBLISHED_URL, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", "--all", "-W", "--keep-going",
         "--path-output", str(root), "."],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the build with a base URL failed:\n{log[-4000:]}"
    html = root / "_build" / "html"
    with _serving(html, urlsplit(PUBLISHED_URL).path) as url:
        yield Published(html, log, url)
    shutil.rmtree(root, ignore_errors=True)


def test_sitemap_lists_every_chapter_under_the_base_url(published):
    urls = _sitemap_urls(published.html / "sitemap.xml")
    assert urls == {PUBLISHED_URL + name + ".html" for name in chapter_names()}, sorted(urls)
    for url in urls:  # each one is served under the site's path, and names itself as its address
        page = _served(published.site, url[len(PUBLISHED_URL):]).decode()
        canonical = re.findall(r'<link rel="canonical" href="([^"]+)"', page)
        assert canonical == [url], (url, canonical)


@pytest.mark.parametrize("missing", ["no-such-page.html", "book/no-such-chapter.html", "a/b/c/d/"])
def test_the_404_page_works_at_any_depth_under_the_site(published, missing):
    """An unknown address, however deep, shows the 404 page with the book's styles, logo and
    table of contents, every resource loaded and every link pointing into the site."""
    from playwright.sync_api import sync_playwright

    url = published.site + missing
    errors: list[str] = []
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = _browser(pw)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", _only_local(published.site, outside))
        page = context.new_page()
        _watch(page, errors, expected=url)
        response = page.goto(url, wait_until="load")
        page.wait_for_load_state("networkidle")
        state = page.evaluate("""() => ({
            title: document.title,
            text: document.querySelector('article') ? document.querySelector('article').textContent : '',
            sheets: Array.from(document.querySelectorAll('link[rel="stylesheet"]'))
                         .filter(l => !l.sheet).map(l => l.href),
            styled: getComputedStyle(document.body).fontFamily,
            logo: Array.from(document.querySelectorAll('img.logo__image'))
                       .some(i => i.complete && i.naturalWidth > 0),
            links: Array.from(document.querySelectorAll('.bd-sidebar-primary a[href]')).map(a => a.href),
        })""")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"404-at-{missing.strip('/').replace('/', '__')}.png"), full_page=True)
        browser.close()
    assert response is not None and response.status == 404, response and response.status
    assert state["title"].startswith("Page not found"), state["title"]
    assert "is not a page of the book" in state["text"]
    assert not errors, f"the 404 page at {missing}: {errors}"
    assert not outside, f"the 404 page asked for resources outside the site: {outside}"
    assert not state["sheets"], f"stylesheets not applied: {state['sheets']}"
    assert state["logo"], "the logo did not load"
    chapters = {published.site + name + ".html" for name in chapter_names()}
    assert chapters <= set(state["links"]), sorted(chapters - set(state["links"]))
