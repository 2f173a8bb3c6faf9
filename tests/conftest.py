"""Shared test configuration and session-wide fixtures."""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile

import pytest
from hypothesis import settings

# No example database in the checkout; no per-example deadline (the machine may be loaded); a
# failure prints the @reproduce_failure blob that replays it, since no database keeps it.
settings.register_profile("course", database=None, deadline=None, print_blob=True)
settings.load_profile("course")


# Inductor's default folder (importing torch._inductor creates it): did it exist before this session?
_INDUCTOR_DEFAULT = os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")
_INDUCTOR_DEFAULT_EXISTED = os.path.exists(_INDUCTOR_DEFAULT)


@pytest.fixture(scope="session")
def inductor_cache():
    """A private cache folder for torch.compile (TorchInductor), removed after the session.

    Inductor otherwise leaves compiled kernels in /tmp/torchinductor_<user>, and puts its
    precompiled headers there whatever the cache folder: that folder is removed too, if
    the session created it. Request this fixture before the session's first compilation.
    """
    folder = tempfile.mkdtemp(prefix="bnlib-inductor-")
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    yield folder
    if before is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
    shutil.rmtree(folder, ignore_errors=True)
    if not _INDUCTOR_DEFAULT_EXISTED:
        shutil.rmtree(_INDUCTOR_DEFAULT, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The student notebooks (shared by the notebook, autograder and book tests)
# --------------------------------------------------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The book's support code (book/support/) imports as the chapters import it: `support.experiments`.
sys.path.insert(0, str(REPO / "book"))
from autograder.course.spec import ASSIGNMENTS  # noqa: E402


@pytest.fixture(scope="session")
def student_release() -> Path:
    """The student notebooks, generated once per session by ``python -m autograder release``.

    Returns the release folder, ``_build/release``, holding ``<assignment>/<assignment>.ipynb``;
    the gradebook that knows their graded cells is ``_build/gradebook.db`` (copy it before
    grading into it).
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


# --------------------------------------------------------------------------------------------
# Grading a class (the autograder's end-to-end tests)
# --------------------------------------------------------------------------------------------

from grade_runs import run_grade  # noqa: E402


@pytest.fixture(scope="session")
def released(student_release) -> dict[str, Path]:
    """``assignment -> its student notebook``, from the session's one release."""
    return {a: student_release / a / f"{a}.ipynb" for a in ASSIGNMENTS}


@pytest.fixture(scope="session")
def solutions_digest() -> str:
    """A fingerprint of solutions/ taken before any grading (nothing may change it)."""
    from autograder.grading.store import tree_sha256
    from autograder.paths import SOLUTIONS

    return tree_sha256(SOLUTIONS)


@pytest.fixture(scope="session")
def synthetic_class(tmp_path_factory, released, solutions_digest):
    """The synthetic class (every assignment; see :mod:`autograder.synthetic`), written once."""
    from autograder.synthetic import make_class

    root = tmp_path_factory.mktemp("class")
    expected = make_class(root / "class", released=released, grading_dir=root / "grades")
    return root, expected


@pytest.fixture(scope="session")
def graded_class(synthetic_class):
    """The synthetic class graded once per session, as an instructor would: one command."""
    root, expected = synthetic_class
    run = run_grade([root / "class" / "submitted", "--timeout", "5", "--workers", "2"], root / "grades",
                    root / "scratch")
    assert run.returncode == 0, run.stderr[-4000:]
    return run, expected


# --------------------------------------------------------------------------------------------
# The book (one from-scratch build shared by the book tests)
# --------------------------------------------------------------------------------------------

import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

BIN = Path(sys.executable).parent


@dataclass
class BookBuild:
    """One from-scratch build of the book: where it went, what it printed, how long it took."""

    root: Path  #: the --path-output folder (holds _build/html, _build/.jupyter_cache, ...)
    html: Path  #: the built site
    log: str  #: stdout and stderr of jupyter-book
    returncode: int
    seconds: float
    figures: Path  #: what tests/figure_probe.py recorded of every figure shown (tests/test_figures.py)


@pytest.fixture(scope="session")
def book_build(student_release: Path) -> BookBuild:
    """The book, built once per session from scratch, every notebook executed.

    ``jupyter-book build --all -W --keep-going`` into ``_build/test-book`` (emptied first, so
    no execution cache is reused; left afterwards for inspection): the student edition, the
    default. The build links the student notebooks, so it needs the release first. Its kernels
    start with ``tests/figure_probe.py`` (a private IPython profile), which records every
    figure shown in ``figures/``.
    """
    root = REPO / "_build" / "test-book"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "figure_probe.py", startup / "50-figure-probe.py")
    env = dict(os.environ, PYTHONHASHSEED="0", IPYTHONDIR=str(root / "ipython"),
               BN_FIGURE_REPORT=str(root / "figures"))
    env.pop("BN_EDITION", None)
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
    return BookBuild(root, root / "_build" / "html", log, proc.returncode, seconds, root / "figures")


@pytest.fixture(scope="session")
def instructor_build(book_build: BookBuild) -> BookBuild:
    """The instructor edition, as ``make book EDITION=instructor`` builds it.

    ``BN_EDITION=instructor``, into ``_build/test-book-instructor`` (emptied first), with the
    execution cache of the session's student build (``BN_EXECUTION_CACHE``): the two editions
    have the same code cells, so no notebook runs again.
    """
    assert book_build.returncode == 0, "the student edition did not build; see tests/test_book.py"
    root = REPO / "_build" / "test-book-instructor"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = dict(os.environ, PYTHONHASHSEED="0", BN_EDITION="instructor",
               BN_EXECUTION_CACHE=str(book_build.root / "_build" / ".jupyter_cache"))
    start = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "jupyter-book"), "build", "--all", "-W", "--keep-going", "--path-output", str(root), "."],
        cwd=REPO, capture_output=True, text=True, timeout=1200, env=env,
    )
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    (REPO / "_build" / "test-artifacts" / "book-build-instructor.log").write_text(log)
    return BookBuild(root, root / "_build" / "html", log, proc.returncode, seconds, root / "figures")
