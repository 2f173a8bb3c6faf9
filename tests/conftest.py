"""Shared, session-scoped fixtures: the expensive things (a release, a book build) happen once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ASSIGNMENTS = ("bn-numpy-forward", "bn-numpy-backward", "bn-torch")


@pytest.fixture(scope="session")
def student_release() -> Path:
    """The student notebooks, generated once per session by ``python -m autograder release``.

    Returns the release folder, ``_build/release``, holding ``<assignment>/<assignment>.ipynb``.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "release"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"autograder release failed:\n{proc.stdout}\n{proc.stderr}"
    release = REPO / "_build" / "release"
    for a in ASSIGNMENTS:
        assert (release / a / f"{a}.ipynb").is_file(), f"release did not produce {a}/{a}.ipynb"
    return release


@dataclass
class BookBuild:
    """One from-scratch build of the book: where it went, what it printed, how long it took."""

    root: Path  #: the --path-output folder (holds _build/html, _build/.jupyter_cache, ...)
    html: Path  #: the built site
    log: str  #: stdout and stderr of jupyter-book
    returncode: int
    seconds: float


@pytest.fixture(scope="session")
def book_build(student_release: Path) -> BookBuild:
    """The book, built once per session from scratch, every notebook executed.

    ``jupyter-book build --all -W --keep-going`` into ``_build/test-book`` (emptied first, so
    no execution cache is reused; left afterwards for inspection). The build links the student
    notebooks, so it needs the release first.
    """
    root = REPO / "_build" / "test-book"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = dict(os.environ, PYTHONHASHSEED="0")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "jupyter-book"), "build", "--all", "-W", "--keep-going",
         "--path-output", str(root), "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
    )
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    artifacts = REPO / "_build" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "book-build.log").write_text(log)
    return BookBuild(root, root / "_build" / "html", log, proc.returncode, seconds)
