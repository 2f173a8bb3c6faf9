r"""Naming the mistake: which catalogued wrong variant a failed record looks like.

On a failure, the check's scenario is replayed on each wrong variant of
:mod:`autograder.course.mistakes` that replaces one of the check's functions, in catalogue
order (:mod:`autograder.judging.replay`); the first whose record the student's matches
(:func:`autograder.judging.compare.same`), and which itself fails the check, names the
mistake.

TRUSTED SIDE ONLY.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autograder.course.mistakes import Mistake, for_assignment
from autograder.inside.scenarios import Record, Scenario
from autograder.judging.compare import problems, same
from autograder.judging.replay import variant_record

__all__ = ["name_mistake"]


def name_mistake(sc: Scenario, record: Record, ref: Record, seed: int,
                 options: Mapping[str, Any]) -> Mistake | None:
    """The catalogued mistake whose results the student's ``record`` reproduces, if any.

    Args:
        sc: the check's scenario.
        record: the student's record (which failed the check).
        ref: the reference's record for the same seed and options.
        seed: the seed of the challenge inputs.
        options: the scenario's options (the device).
    """
    for mistake in for_assignment(sc.assignment, sc.targets):
        rec = variant_record(mistake, sc.check_id, sc.assignment, seed, options)
        if rec is None:
            continue
        wrong, _ = problems(sc, rec, ref)
        if wrong and same(sc, record, rec):
            return mistake
    return None
