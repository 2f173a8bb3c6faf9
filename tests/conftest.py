"""Shared test configuration and session-wide fixtures."""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile

import pytest
from hypothesis import settings

# No example database in the checkout; no per-example deadline (the machine may be loaded).
settings.register_profile("course", database=None, deadline=None)
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
