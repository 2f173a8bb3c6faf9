"""autograder.inside.record: records go to disk and come back; nothing else comes back."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from autograder.inside.record import Record, shorten


def test_records_round_trip_and_garbage_loads_as_none():
    with tempfile.TemporaryDirectory() as folder:
        _round_trip(Path(folder))


def _round_trip(tmp_path: Path) -> None:
    facts = {"calls": {"a": "x"}, "error": {"call": "f", "type": "E", "message": "m"}}
    record = Record({"a": np.arange(3.0), "n": np.array(7)}, facts)
    record.save(tmp_path, "c")
    back = Record.load(tmp_path, "c")
    assert back.facts == record.facts and np.array_equal(back.arrays["a"], record.arrays["a"])
    assert Record.load(tmp_path, "missing") is None
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    assert Record.load(tmp_path, "bad") is None
    np.savez(tmp_path / "obj.npz", a=np.array([object()], dtype=object))
    (tmp_path / "obj.json").write_text("{}")
    assert Record.load(tmp_path, "obj") is None  # object arrays are never unpickled


def test_shorten_cuts_long_text_and_says_so():
    assert shorten("abc") == "abc"
    cut = shorten("x" * 1000, 50)
    assert len(cut) == 50 and cut.endswith("...")
