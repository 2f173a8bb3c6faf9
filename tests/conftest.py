"""Shared test configuration and session-wide fixtures."""

from __future__ import annotations

from hypothesis import settings

# No example database in the checkout; no per-example deadline (the machine may be loaded).
settings.register_profile("course", database=None, deadline=None)
settings.load_profile("course")

# --------------------------------------------------------------------------------------------
# The student notebooks (shared by the notebook, autograder and book tests)
# --------------------------------------------------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ("bn-numpy-forward", "bn-numpy-backward", "bn-torch")


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
    from autograder.course import SOLUTIONS, tree_sha256

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
