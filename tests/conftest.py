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
