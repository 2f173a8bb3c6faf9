"""A worker process's state: its sandbox slot per thread, its scratch files, its warm-up and its clean exit.

A worker is a process of the local pool (started with ``spawn``; :func:`init_process` is the
pool's initializer) or a Dask worker. Each thread that grades gets a sandbox slot of its own
(:func:`sandbox`); whatever the process writes (the workers' copies of the gradebook, PyTorch's
compiler caches, the judge's records) goes under the scratch folder (:func:`scratch_folder`)
and is removed by :func:`shutdown`, at exit or when the coordinator stops the pool.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import multiprocessing.util
import os
import shutil
import signal
import sys
import tempfile
import threading

from autograder.sandbox import Limits, Sandbox

__all__ = ["SCRATCH_ENV", "scratch_folder", "sandbox", "shutdown", "warm_up", "init_process", "gradebook_url"]

#: The environment variable that names a worker's scratch folder (set by the local pool).
SCRATCH_ENV = "BNGRADE_SCRATCH"
#: The exit status of a worker told to stop (128 + SIGTERM).
_TERMINATED = 128 + signal.SIGTERM
#: PR_SET_PDEATHSIG (prctl.h): the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1

#: Per thread: the sandbox slot this thread grades in.
_local = threading.local()
_sandboxes: list[Sandbox] = []
_lock = threading.RLock()
_scratch: dict[str, str] = {}


def scratch_folder() -> str | None:
    """The worker's scratch folder (created), or None: the system's temporary folder."""
    folder = os.environ.get(SCRATCH_ENV) or None
    if folder:
        os.makedirs(folder, exist_ok=True)
    return folder


def sandbox(limits: Limits) -> Sandbox:
    """This thread's sandbox slot (made on first use, with `limits` as its slot's limits)."""
    box = getattr(_local, "sandbox", None)
    if box is None or box.closed:
        box = Sandbox(limits)
        _local.sandbox = box
        with _lock:
            _sandboxes.append(box)
    return box


def shutdown() -> None:
    """Release this process's sandbox slots (their cgroups, their user ids) and scratch files."""
    with _lock:
        while _sandboxes:
            _sandboxes.pop().close()
        for path in list(_scratch.values()):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        _scratch.clear()
    _local.__dict__.clear()


atexit.register(shutdown)


def private_caches() -> None:
    """PyTorch's compiler caches (torch._dynamo is imported by the judge) go to a private folder."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    path = tempfile.mkdtemp(prefix="bngrade-torch-cache-", dir=scratch_folder())
    with _lock:
        _scratch[path] = path
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(path, "triton"))


def warm_up(kinds: list[str], limits: Limits) -> None:
    """Start this thread's warm runners for `kinds` and import what grading them needs, meanwhile.

    The imports below are here, not at the top, so that they overlap the warm runners' own
    imports (NumPy, PyTorch), which start first.
    """
    box = sandbox(limits)
    for kind in kinds:
        box.prestart(kind)
    import nbformat  # noqa: F401, PLC0415 - overlaps the warm runners' start (see above)
    import nbgrader.preprocessors  # noqa: F401, PLC0415 - ditto

    from autograder.output import feedback  # noqa: F401, PLC0415 - ditto
    if "torch" in kinds:
        import torch  # noqa: F401, PLC0415 - ditto, and only for bn-torch's judge
        import torch._dynamo  # noqa: F401, PLC0415 - torch imports it lazily on the first autograd call

        import bnlib.torch  # noqa: F401, PLC0415 - ditto, and only for bn-torch's judge


def _terminate(*_) -> None:
    """SIGTERM (the coordinator died, or stops the pool): release the sandboxes, then exit now.

    A pool worker cannot wait for its queue to tell it to stop: it holds both ends of it.
    """
    try:
        shutdown()
    finally:
        os._exit(_TERMINATED)


def init_process(scratch: str | None = None, kinds: list[str] | None = None, limits: Limits | None = None) -> None:
    """Initializer of a local worker process: warm up; a clean exit (and cleanup) when told to stop."""
    if scratch:
        os.environ[SCRATCH_ENV] = scratch
    multiprocessing.util.Finalize(None, shutdown, exitpriority=100)
    signal.signal(signal.SIGTERM, _terminate)
    try:  # die with the coordinator
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass
    if os.getppid() == 1:
        sys.exit(_TERMINATED)
    private_caches()
    if kinds:
        warm_up(kinds, limits or Limits())


def gradebook_url(snapshot: bytes) -> str:
    """A private copy of the coordinator's gradebook (assignment tables), one per content."""
    digest = hashlib.sha256(snapshot).hexdigest()[:16]
    with _lock:
        path = _scratch.get(digest)
        if path is None or not os.path.exists(path):
            folder = scratch_folder() or tempfile.gettempdir()
            fd, path = tempfile.mkstemp(prefix=f"bngrade-gradebook-{digest}-", suffix=".db", dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(snapshot)
            _scratch[digest] = path
    return f"sqlite:///{path}"
