"""The book builds from scratch with zero warnings, and every page holds up in a real browser.

Both tests share one from-scratch build (``book_build`` in conftest.py). The browser test
serves the built site on 127.0.0.1 and opens every page in Debian's headless Chromium
through Playwright; it saves a screenshot of each page in ``_build/test-artifacts/book/``.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

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


def test_book_builds_from_scratch_without_warnings(book_build):
    assert book_build.returncode == 0, f"jupyter-book build failed:\n{book_build.log[-6000:]}"
    problems = [
        line
        for line in book_build.log.splitlines()
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
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def site(book_build):
    """The built site, served on 127.0.0.1 by a thread; yields its base URL."""
    if book_build.returncode != 0:
        pytest.fail("the book did not build; see test_book_builds_from_scratch_without_warnings")
    handler = functools.partial(_QuietHandler, directory=str(book_build.html))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


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
  return {maths: maths.length, unrendered, raw, tex, wide, images, bare, links};
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
    math_pages = 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})

        def only_local(route):
            url = route.request.url
            if url.startswith(site) or url.startswith(("data:", "blob:", "about:")):
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        context.route("**/*", only_local)
        for rel in pages:
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
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
            if errors:
                failures.append(f"{rel}: console errors: {errors}")
            links.update(report["links"])
            page.screenshot(path=str(ARTIFACTS / (rel.replace("/", "__") + ".png")), full_page=True)
            page.close()
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
    shots = list(ARTIFACTS.glob("*.png"))
    assert len(shots) >= len(chapter_names()), "a screenshot is missing"


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
