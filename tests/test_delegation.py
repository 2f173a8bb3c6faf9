"""autograder.judging.delegation: code that hands its work to a library scores 0 on that part, and is told why.

Every case of ``student_code.DELEGATING`` is caught both from the source and at run time alone.
"""

from __future__ import annotations

import pytest
from in_process import failed, namespace, verdicts
from student_code import DELEGATING, points, solution_sources

from autograder.notebook import CELL_SEPARATOR


@pytest.mark.parametrize("case", sorted(DELEGATING))
def test_delegating_code_scores_zero_on_that_part_and_is_told_why(case):
    assignment, sources, delegated = DELEGATING[case]
    full = {**solution_sources(assignment), **sources}
    source = CELL_SEPARATOR.join(full.values())
    vs = verdicts(namespace(full), assignment, 2, source)
    for check in delegated:
        assert vs[check].delegated and not vs[check].passed, (check, vs[check].message)
        assert "scores 0" in vs[check].message
    untouched = set(points(assignment)) - set(delegated) - {c for c in points(assignment) if "module" in c}
    assert all(vs[c].passed for c in untouched), failed(vs)


@pytest.mark.parametrize("case", sorted(DELEGATING))
def test_delegation_is_seen_at_run_time_without_the_source(case):
    assignment, sources, delegated = DELEGATING[case]
    vs = verdicts(namespace({**solution_sources(assignment), **sources}), assignment, 2, source="")
    assert all(vs[c].delegated for c in delegated), failed(vs)


def test_a_class_named_like_pytorchs_is_not_delegation():
    source = solution_sources("bn-torch")["solution_batch_norm_1d"]
    source = source.replace("super().__init__()", "super(BatchNorm1d, self).__init__()")
    ns = namespace({**solution_sources("bn-torch"), "solution_batch_norm_1d": source})
    vs = verdicts(ns, "bn-torch", 0, CELL_SEPARATOR.join([source]))
    assert failed(vs) == {}
