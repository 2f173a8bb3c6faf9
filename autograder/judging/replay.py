r"""Replays: a check's scenario run again on bnlib's reference, or on a catalogued wrong variant.

The trusted side runs the same scenario, with the seed the sandbox was given, on
:func:`autograder.course.reference.reference` (what the student's record is compared with)
and on :meth:`autograder.course.mistakes.Mistake.implementation` (to name a mistake). These
records depend only on (check, seed, options): they are kept, so that grading a class with
one seed computes each of them once.

TRUSTED SIDE ONLY (it imports bnlib, which the sandbox hides).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from autograder.course.mistakes import Mistake
from autograder.course.reference import reference
from autograder.course.spec import COURSE, kind_of
from autograder.inside import scenarios
from autograder.inside.scenarios import Record

__all__ = ["reference_record", "variant_record", "clear"]

_RECORDS: dict[tuple, Record | None] = {}
#: The cache is emptied when it holds this many records (a long-running grader with many seeds).
_RECORDS_MAX = 20_000


def clear() -> None:
    """Forget every kept record."""
    _RECORDS.clear()


def _cached(key: tuple, make: Callable[[], Record | None]) -> Record | None:
    if key not in _RECORDS:
        if len(_RECORDS) >= _RECORDS_MAX:
            _RECORDS.clear()
        _RECORDS[key] = make()
    return _RECORDS[key]


def _options_key(options: Mapping[str, Any]) -> tuple:
    return tuple(sorted(options.items()))


def reference_record(check_id: str, assignment: str, seed: int, options: Mapping[str, Any]) -> Record:
    """The record of bnlib's reference on check ``check_id``.

    Raises:
        RuntimeError: if the reference itself fails the scenario (a bug of the course).
    """

    def make() -> Record:
        names = reference(assignment)
        if kind_of(assignment) == "numpy":  # a NumPy check may call the other NumPy assignment's names
            names = {k: v for a in COURSE if a.kind == "numpy" for k, v in reference(a.name).items()}
        return scenarios.run(check_id, names, seed, options)

    ref = _cached(("reference", check_id, assignment, seed, _options_key(options)), make)
    if "error" in ref.facts or "missing" in ref.facts:
        raise RuntimeError(f"bnlib's reference fails check {check_id!r}: {ref.facts}")
    return ref


def variant_record(mistake: Mistake, check_id: str, assignment: str, seed: int,
                   options: Mapping[str, Any]) -> Record | None:
    """The record of ``mistake``'s wrong variant on check ``check_id`` (``None`` if it could not run)."""

    def make() -> Record | None:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # a variant may divide by zero: that is the mistake
                return scenarios.run(check_id, mistake.implementation(assignment), seed, options)
        except Exception:  # noqa: BLE001 - a variant that cannot run names nothing
            return None

    return _cached(("mistake", mistake.name, check_id, assignment, seed, _options_key(options)), make)
