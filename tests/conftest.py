"""Shared test configuration and session-wide fixtures."""

from __future__ import annotations

from hypothesis import settings

# No example database in the checkout; no per-example deadline (the machine may be loaded).
settings.register_profile("course", database=None, deadline=None)
settings.load_profile("course")


# ---------------------------------------------------------------- grading: shared, expensive fixtures
import pytest

from tests.grade_runs import run_grade


@pytest.fixture(scope="session")
def released(tmp_path_factory) -> dict:
    """The student notebook of every assignment (``python -m autograder release``), once per session."""
    from autograder.release import release

    out = tmp_path_factory.mktemp("release")
    paths = release(output=out / "release", db_url=f"sqlite:///{out / 'gradebook.db'}", url="")
    return {p.parent.name: p for p in paths}


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
