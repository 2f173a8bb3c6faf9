r"""Where a benchmark's fresh memory comes from: the environment a run starts in.

On a CPU, a new tensor of many megabytes is memory the operating system has promised but not
provided; the first write to each page stops the program while the kernel clears and maps
it, and the C library gives large blocks back to the operating system when they are freed,
so a training loop pays again at every step. Two variables, read once when a process
starts, change that for every kernel of a run alike:

- :data:`HUGE_PAGES` (``THP_MEM_ALLOC_ENABLE=1``): PyTorch's CPU allocator asks Linux for
  2 MiB pages, a 512th as many interruptions; each page is still cleared.
- :data:`REUSE_MEMORY` (glibc's ``mmap_threshold`` and ``trim_threshold`` tunables at 1 GiB):
  the C library serves every block below 1 GiB from its own heap and keeps freed memory
  there, so a tensor freed at one step is the memory of the next step's tensor, already
  mapped and never cleared again. This is what PyTorch's caching allocator does on a GPU.

:func:`environment` gives the variables a run needs, :func:`mode` names the mode a process
runs in, for the report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["HUGE_PAGES", "REUSE_MEMORY", "MODES", "environment", "mode"]

#: PyTorch's CPU allocator in 2 MiB pages (PyTorch reads it at its first allocation).
HUGE_PAGES: dict[str, str] = {"THP_MEM_ALLOC_ENABLE": "1"}

_GIB = 2**30
_TUNABLES = "GLIBC_TUNABLES"
_REUSE = (f"glibc.malloc.mmap_threshold={_GIB}", f"glibc.malloc.trim_threshold={_GIB}")

#: glibc keeps freed blocks below 1 GiB for the process (read when the process starts).
REUSE_MEMORY: dict[str, str] = {_TUNABLES: ":".join(_REUSE)}

#: The memory modes a run can be in, as :func:`mode` names them.
MODES = ("default", "huge pages", "memory reused", "huge pages, memory reused")


def _has_reuse(environ: Mapping[str, str]) -> bool:
    tunables = environ.get(_TUNABLES, "").split(":")
    return all(t in tunables for t in _REUSE)


def environment(environ: Mapping[str, str], huge_pages: bool, reuse_memory: bool) -> dict[str, str] | None:
    """The environment a run with these options needs, or ``None`` if ``environ`` already is one.

    Other variables are kept, and other glibc tunables too (``GLIBC_TUNABLES`` is a
    colon-separated list).
    """
    env = dict(environ)
    if huge_pages:
        env.update(HUGE_PAGES)
    if reuse_memory and not _has_reuse(environ):
        env[_TUNABLES] = ":".join(t for t in (environ.get(_TUNABLES), REUSE_MEMORY[_TUNABLES]) if t)
    return None if env == dict(environ) else env


def mode(environ: Mapping[str, str] | None = None) -> str:
    """The memory mode of a process with this environment (default: this one's), one of :data:`MODES`."""
    environ = os.environ if environ is None else environ
    huge = all(environ.get(k) == v for k, v in HUGE_PAGES.items())
    reuse = _has_reuse(environ)
    return MODES[huge + 2 * reuse]
