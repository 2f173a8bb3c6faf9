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
