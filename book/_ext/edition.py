"""The book's two editions from one source: the student edition and the instructor edition.

The student edition (the default) derives every equation and shows the shape of every
computation, but no code that answers a graded function; the instructor edition also shows
the reference library's full listings, for publishing after the deadline. A chapter marks
what belongs to one edition with Sphinx's ``only`` directive, whose tags this extension sets
from the edition::

    ````{only} instructor
    ```{literalinclude} ../bnlib/numpy.py
    :pyobject: backward_staged
    ```
    ````

    ````{only} student
    What stands in its place: the graph, the equations, a check to run.
    ````

and sphinx-exercise's ``{solution}`` blocks are shown in the instructor edition only
(``hide_solutions``).

The edition is chosen by ``$BN_EDITION`` (``make book EDITION=instructor`` sets it), else by
``bn_edition`` in the Sphinx configuration (``sphinx.config`` in ``_config.yml``), else it is
``student``. The instructor edition says so in its title and in a banner on every page.

Sphinx resolves ``only`` in the pages it writes, so the rendered pages and the search index
of the student edition never contain the instructor's blocks; but the page sources it
publishes (``_sources/``: the ``.md`` download, and the ``.ipynb`` download that Jupyter Book
copies there) are copies of the sources, which hold both editions. After the build this
extension rewrites those copies with the blocks the edition does not show removed
(:func:`strip_blocks`), so that everything the site publishes is of its edition.

``$BN_EXECUTION_CACHE``, when set, is the execution cache's folder: the Makefile points the
instructor edition's build at the student edition's cache, so that the instructor edition
runs no notebook the student edition has run (the two editions have the same code cells).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import nbformat
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError
from sphinx.util import logging

EDITIONS = ("student", "instructor")
ENV_VAR = "BN_EDITION"
CACHE_VAR = "BN_EXECUTION_CACHE"
BANNER = (
    "Instructor edition: it shows the complete reference code of every graded function. "
    "Publish it only after the assignments' deadline; students get the student edition."
)

logger = logging.getLogger(__name__)


def edition(configured: str | None) -> str:
    """The edition to build: ``$BN_EDITION``, else ``configured``, else ``"student"``."""
    name = (os.environ.get(ENV_VAR) or configured or "student").strip().lower()
    if name not in EDITIONS:
        raise ConfigError(f"unknown edition {name!r} (from ${ENV_VAR} or bn_edition): choose {' or '.join(EDITIONS)}")
    return name


# A MyST directive block that opens with a fence of backticks or colons, for instance
# ````{only} instructor, and closes with a line of the same character, at least as long.
_OPENING = re.compile(r"^ {0,3}(?P<fence>`{3,}|:{3,})\{(?P<name>only|solution)\}[ \t]*(?P<argument>[^\n]*)$")


def strip_blocks(text: str, shown: Callable[[str], bool], hide_solutions: bool) -> str:
    """``text`` (MyST Markdown) without the blocks an edition does not show.

    An ``{only} <expression>`` block is removed when ``shown(expression)`` is false; a
    ``{solution}`` block when ``hide_solutions``. Everything else is kept as it is, the lines
    of a shown ``only`` block included.
    """
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    k = 0
    while k < len(lines):
        opening = _OPENING.match(lines[k].rstrip("\n"))
        if opening:
            fence = opening["fence"]
            closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
            end = next((j for j in range(k + 1, len(lines)) if closing.match(lines[j].rstrip("\n"))), None)
            hidden = (hide_solutions if opening["name"] == "solution"
                      else not shown(opening["argument"].strip()))
            if end is not None and hidden:
                k = end + 1
                continue
        kept.append(lines[k])
        k += 1
    return "".join(kept)


def configure(app: Sphinx, config: Config) -> None:
    name = edition(config.bn_edition)
    config.bn_edition = name
    app.tags.add(name)
    config.hide_solutions = name == "student"
    if name == "instructor":
        config.html_title = f"{config.html_title} (instructor edition)"
        config.html_theme_options = {**config.html_theme_options, "announcement": BANNER}
    cache = os.environ.get(CACHE_VAR)
    if cache:
        config.nb_execution_cache_path = str(Path(cache).resolve())
    logger.info("building the %s edition", name)


def strip_published_sources(app: Sphinx, exception: Exception | None) -> None:
    """Rewrite the page sources under ``_sources/`` (``.md`` and ``.ipynb``) for this edition."""
    sources = Path(app.outdir) / "_sources"
    if exception is not None or app.builder.format != "html" or not sources.is_dir():
        return

    def strip(text: str) -> str:
        return strip_blocks(text, app.tags.eval_condition, app.config.hide_solutions)

    for path in sorted(sources.rglob("*")):
        if path.suffix == ".ipynb":
            nb = nbformat.read(path, as_version=4)
            changed = False
            for cell in nb.cells:
                if cell.cell_type == "markdown":
                    stripped = strip(cell.source)
                    changed |= stripped != cell.source
                    cell.source = stripped
            if changed:
                nbformat.write(nb, path)
        elif path.name.endswith((".md", ".md.txt")):
            text = path.read_text(encoding="utf-8")
            stripped = strip(text)
            if stripped != text:
                path.write_text(stripped, encoding="utf-8")


def setup(app: Sphinx) -> dict:
    app.add_config_value("bn_edition", "student", "env", [str])
    # before the extensions that read the values it sets (myst-nb reads its cache path later,
    # when the builder starts)
    app.connect("config-inited", configure, priority=400)
    app.connect("build-finished", strip_published_sources)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
