"""Results of experiments too slow to run at every build, committed as JSON and tied to their code.

A chapter whose experiment takes minutes shows results computed once and committed beside
it, ``book/<name>.json``. Each file stores, next to the data, a *fingerprint* of the source
code that produced them: the SHA-256 of the source text of each module or object named in
``sources`` (``"support.data_parallel"``, or ``"bnlib.torch:SyncBatchNorm"`` for one class or
function), in order. :func:`load` recomputes it and refuses results whose code has changed
since, naming the command that regenerates them; a test of each such file does the same, so
committed results never silently drift from the code the book shows.

Usage, in the experiment's module::

    SOURCES = ("support.data_parallel", "bnlib.torch:SyncBatchNorm")
    results.save(CACHE, report, SOURCES, command="cd book && ../.venv/bin/python -m support.data_parallel")

and in the chapter: ``report = results.load(CACHE, SOURCES)``.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import inspect
import json
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["StaleResults", "fingerprint", "save", "load"]


class StaleResults(RuntimeError):
    """Committed results that are missing or were produced by other code than the current one."""


def _source(name: str) -> str:
    """The source text of ``"module"`` or ``"module:qualified.name"``."""
    module_name, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return inspect.getsource(obj)


def fingerprint(sources: Sequence[str]) -> str:
    """SHA-256 of the names and source texts of ``sources``, in order."""
    digest = hashlib.sha256()
    for name in sources:
        digest.update(name.encode() + b"\0" + _source(name).encode() + b"\0")
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def save(path: str | Path, data: Any, sources: Sequence[str], command: str) -> None:
    """Write ``data`` (JSON-able) to ``path`` with the fingerprint of ``sources`` and how to regenerate it."""
    document = {
        "fingerprint": fingerprint(sources),
        "sources": list(sources),
        "command": command,
        "made": {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
                 "torch": _version("torch"), "numpy": _version("numpy"), "machine": platform.machine()},
        "data": data,
    }
    Path(path).write_text(json.dumps(document, indent=1) + "\n")


def load(path: str | Path, sources: Sequence[str]) -> Any:
    """The data saved at ``path``, if it was produced by the current source of ``sources``.

    Raises:
        StaleResults: the file is missing, names other sources, or their code has changed;
            the message gives the command that regenerates it.
    """
    path = Path(path)
    if not path.is_file():
        raise StaleResults(f"{path} does not exist: run the experiment's module to produce it")
    document = json.loads(path.read_text())
    if document["sources"] != list(sources):
        raise StaleResults(f"{path} was made from {document['sources']}, not {list(sources)}: "
                           f"regenerate it with `{document['command']}`")
    if document["fingerprint"] != fingerprint(sources):
        raise StaleResults(f"{path} was made by other code than the current {', '.join(sources)}: "
                           f"regenerate it with `{document['command']}`")
    return document["data"]
