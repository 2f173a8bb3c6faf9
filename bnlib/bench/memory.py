r"""Where a benchmark's fresh memory comes from: the environment a run starts in.

On a CPU, a new tensor of many megabytes is memory the operating system has promised but not
provided; the first write to each page stops the program while the kernel clears and maps
it, and the C library gives large blocks back to the operating system when they are freed,
so a training loop pays again at every step. Two variables, read once when a process
starts, change that for every kernel of a run alike:

- :data:`HUGE_PAGES` (``THP_MEM_ALLOC_ENABLE=1``): PyTorch's CPU allocator asks Linux for
  2 MiB pages, up to a 512th as many interruptions; each page is still cleared.
- :data:`REUSE_MEMORY` (glibc's ``mmap_threshold`` and ``trim_threshold`` tunables at 1 GiB):
  the C library serves blocks below 1 GiB allocated by the main thread from its heap and
  keeps freed memory there, so a tensor freed at one step is, once the heap has grown to
  hold a step's tensors, the memory of the next step's tensor, already mapped and not
  cleared again. The heap keeps what it grew to (resident memory), and other threads'
  large blocks still come fresh from the operating system. PyTorch's caching allocator
  does the same on a GPU. Only glibc's ``malloc`` reads these tunables (not musl's, nor a
  preloaded jemalloc or tcmalloc).

:func:`environment` gives the variables a run needs, :func:`mode` names the mode a process
runs in, for the report, and :func:`reuses_memory` says whether it keeps freed memory.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

__all__ = ["HUGE_PAGES", "REUSE_MEMORY", "MODES", "RERUN", "ReuseUnavailable", "environment", "mode", "reuses_memory"]

#: PyTorch's CPU allocator in 2 MiB pages (PyTorch reads it at its first allocation).
HUGE_PAGES: dict[str, str] = {"THP_MEM_ALLOC_ENABLE": "1"}

_GIB = 2**30
_TUNABLES = "GLIBC_TUNABLES"
_REUSE = {"glibc.malloc.mmap_threshold": str(_GIB), "glibc.malloc.trim_threshold": str(_GIB)}

#: glibc keeps freed blocks below 1 GiB for the process (read when the process starts).
REUSE_MEMORY: dict[str, str] = {_TUNABLES: ":".join(f"{k}={v}" for k, v in _REUSE.items())}

#: Set in the environment of a run started again by :mod:`bnlib.bench`, so it never starts a third.
RERUN = "BNLIB_BENCH_RERUN"

#: The memory modes a run can be in, as :func:`mode` names them.
MODES = ("default", "huge pages", "memory reused", "huge pages, memory reused")


class ReuseUnavailable(RuntimeError):
    """Memory reuse was asked for where the C library is not glibc."""


def _glibc() -> bool:
    return platform.libc_ver()[0] == "glibc"


def _has_reuse(environ: Mapping[str, str]) -> bool:
    """Whether glibc would read our thresholds from ``environ`` (of repeated tunables, the last counts)."""
    tunables = dict(t.split("=", 1) for t in environ.get(_TUNABLES, "").split(":") if "=" in t)
    return all(tunables.get(k) == v for k, v in _REUSE.items())


def environment(environ: Mapping[str, str], huge_pages: bool, reuse_memory: bool) -> dict[str, str] | None:
    """The environment a run with these options needs, or ``None`` if ``environ`` already is one.

    Other variables are kept, and other glibc tunables too (``GLIBC_TUNABLES`` is a
    colon-separated list). Raises :class:`ReuseUnavailable` for ``reuse_memory`` where the
    C library is not glibc: the run would measure the default and be reported as reuse.
    """
    if reuse_memory and not _glibc():
        raise ReuseUnavailable("--reuse-memory needs glibc's malloc (it sets glibc's tunables); "
                               f"this Python runs on {platform.libc_ver()[0] or 'another C library'}")
    env = dict(environ)
    if huge_pages:
        env.update(HUGE_PAGES)
    if reuse_memory and not _has_reuse(environ):
        env[_TUNABLES] = ":".join(t for t in (environ.get(_TUNABLES), REUSE_MEMORY[_TUNABLES]) if t)
    return None if env == dict(environ) else env


def reuses_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a process with this environment (default: this one's) keeps freed memory (:data:`REUSE_MEMORY`)."""
    return _glibc() and _has_reuse(os.environ if environ is None else environ)


def mode(environ: Mapping[str, str] | None = None) -> str:
    """The memory mode of a process with this environment (default: this one's), one of :data:`MODES`."""
    environ = os.environ if environ is None else environ
    huge = all(environ.get(k) == v for k, v in HUGE_PAGES.items())
    return MODES[huge + 2 * reuses_memory(environ)]
