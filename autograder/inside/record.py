"""What one check saw: a :class:`Record` of named arrays and JSON facts, and how it goes to disk.

The probe writes a record into the sandbox's channel folder (``<check_id>.npz`` and
``<check_id>.json``); the trusted side loads it and judges it. Loading trusts nothing in
the files: arrays are read with ``allow_pickle=False`` and only numeric or boolean ones are
kept, and anything unreadable is no record at all.

This module runs INSIDE the sandbox: the standard library and NumPy only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Record", "shorten"]


def shorten(text: Any, limit: int = 400) -> str:
    """``str(text)``, cut to ``limit`` characters (ending in ``...`` when cut)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Record:
    """What one check saw: named arrays (float64, int64 or bool) and JSON-able facts."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike, check_id: str) -> None:
        """Write ``<check_id>.npz`` and ``<check_id>.json`` into ``directory`` (atomically)."""
        directory = Path(directory)
        tmp = directory / f".{check_id}.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **self.arrays)
        os.replace(tmp, directory / f"{check_id}.npz")
        tmp = directory / f".{check_id}.json.tmp"
        tmp.write_text(json.dumps(self.facts, default=str))
        os.replace(tmp, directory / f"{check_id}.json")

    @classmethod
    def load(cls, directory: str | os.PathLike, check_id: str) -> Record | None:
        """Read a saved record back, or ``None`` if the check never wrote one (or wrote garbage)."""
        directory = Path(directory)
        try:
            facts = json.loads((directory / f"{check_id}.json").read_text())
            with np.load(directory / f"{check_id}.npz", allow_pickle=False) as data:
                arrays = {k: np.array(data[k]) for k in data.files}
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not isinstance(facts, dict):
            return None
        arrays = {k: v for k, v in arrays.items() if v.dtype.kind in "fiub"}
        return cls(arrays, facts)
