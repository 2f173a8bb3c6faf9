r"""The student notebooks, generated from the instructor's in ``solutions/`` with nbgrader.

``release()`` runs nbgrader's ``generate_assignment`` (through its Python API, in this process)
for each assignment: solutions become ``raise NotImplementedError()`` stubs, hidden tests are
removed (their docstrings stay), cells are locked and checksummed, and the gradebook learns each
assignment's graded cells. Then it rewrites the links to the course book (``book:<chapter>``,
see below) and checks that what it wrote holds no solution and no hidden test.

Links: the source notebooks link chapters as ``[text](book:<chapter>)`` or
``[text](book:<chapter>#<anchor>)``, where ``<chapter>`` is a file stem under ``book/`` (the
names are in :data:`autograder.course.spec.CHAPTERS`). With a book URL (``book_url=``, the environment
variable ``BN_BOOK_URL``, or ``html.baseurl`` in ``_config.yml``) they become
``<url>/book/<chapter>.html#<anchor>``; without one, the link text (which names the chapter)
stays as plain text.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import nbformat
import yaml
from nbgrader.apps import NbGraderAPI
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from autograder.course.spec import ASSIGNMENTS, CHAPTERS
from autograder.paths import NBGRADER_CONFIG, REPO_DIR

__all__ = ["load_config", "tools_on_path", "release", "book_url", "rewrite_book_links", "ReleaseError"]

# What must never reach a student.
_LEAKS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "autograder.inside.probe")
_LINK = re.compile(r"\[([^\]]+)\]\(book:([A-Za-z0-9_-]+)(#[^)\s]*)?\)")


class ReleaseError(RuntimeError):
    """nbgrader failed, or a released notebook would leak a solution or a hidden test."""


def tools_on_path() -> None:
    """Put this Python's ``bin/`` first on ``PATH``.

    nbgrader creates a gradebook by running the ``alembic`` command, and runs notebooks with
    the ``python3`` kernel; both must come from this environment even when it is not
    activated (``.venv/bin/python -m autograder ...``).
    """
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + (os.pathsep + path if path else "")


def load_config(path: str | os.PathLike = NBGRADER_CONFIG) -> Config:
    """The course's nbgrader configuration (a traitlets ``Config``)."""
    path = Path(path).resolve()
    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


def book_url(root: str | os.PathLike = REPO_DIR) -> str:
    """The book's public URL: ``$BN_BOOK_URL``, else ``html.baseurl`` in ``_config.yml``, else ``""``."""
    url = os.environ.get("BN_BOOK_URL", "")
    if not url:
        config = Path(root) / "_config.yml"
        if config.exists():
            data = yaml.safe_load(config.read_text()) or {}
            url = str(((data.get("html") or {}).get("baseurl")) or "")
    return url.rstrip("/")


def rewrite_book_links(text: str, url: str) -> str:
    """Turn ``[text](book:<chapter>#anchor)`` into a link under ``url``, or into plain text."""
    def one(match: re.Match) -> str:
        label, stem, anchor = match.group(1), match.group(2), match.group(3) or ""
        if stem not in CHAPTERS:
            raise ReleaseError(f"link to an unknown chapter book:{stem} (known: {sorted(CHAPTERS)})")
        if url:
            return f"[{label}]({url}/book/{stem}.html{anchor})"
        return label  # the label names the chapter (tests/test_notebooks.py checks it)

    return _LINK.sub(one, text)


def release(
    assignments: Iterable[str] | None = None,
    *,
    root: str | os.PathLike = REPO_DIR,
    output: str | os.PathLike | None = None,
    db_url: str | None = None,
    url: str | None = None,
) -> list[Path]:
    """Generate the student notebooks.

    Args:
        assignments: which ones. Default: all three.
        root: the course root (the repository). Default: this checkout.
        output: the release directory. Default: ``<root>/_build/release``.
        db_url: the gradebook. Default: ``sqlite:///<root>/_build/gradebook.db``.
        url: the book's URL for chapter links. Default: :func:`book_url`.

    Returns:
        The released notebooks, ``<output>/<assignment>/<assignment>.ipynb``.

    Raises:
        ReleaseError: nbgrader failed, or a released notebook contains a solution or a hidden test.
        ValueError: for an unknown assignment.
    """
    names = tuple(assignments) if assignments else ASSIGNMENTS
    unknown = [a for a in names if a not in ASSIGNMENTS]
    if unknown:
        raise ValueError(f"unknown assignment(s) {unknown}; the assignments are {', '.join(ASSIGNMENTS)}")
    root = Path(root).resolve()
    output = Path(output).resolve() if output else root / "_build" / "release"
    build = root / "_build"
    build.mkdir(exist_ok=True)
    config = load_config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.release_directory = str(output)
    config.CourseDirectory.db_url = db_url or f"sqlite:///{build / 'gradebook.db'}"
    url = book_url(root) if url is None else url.rstrip("/")

    tools_on_path()
    api = NbGraderAPI(config=config)
    released = []
    for name in names:
        result = api.generate_assignment(name, force=True)
        if not result.get("success"):
            raise ReleaseError(f"nbgrader could not generate {name}:\n{result.get('error') or result.get('log')}")
        path = output / name / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown" and "nbgrader" not in cell.metadata:
                cell.source = rewrite_book_links(cell.source, url)
        leaks = [
            (i, word)
            for i, cell in enumerate(nb.cells)
            for word in _LEAKS
            if word in cell.source
        ]
        if leaks:
            raise ReleaseError(f"{path} would leak {leaks[0][1]!r} (cell {leaks[0][0]})")
        nbformat.write(nb, path)
        released.append(path)
    return released
