"""autograder.output.similarity: near-copies are listed for the instructor, honest solutions are not."""

from __future__ import annotations

import re

import pytest
from student_code import ALTERNATIVES, ASSIGNMENTS, solution_sources, stub_sources

from autograder.output.similarity import THRESHOLD, compare, html_section

#: A copy of another student's code with every local name changed and a comment added.
RENAMES = (("mu", "batch_mean"), ("var", "batch_var"), ("x_hat", "normed"), ("dbeta", "grad_shift"),
           ("dgamma", "grad_scale"), ("istd", "inv_std"), ("xmu", "centred"), ("std", "spread"))


def _renamed(code: str) -> str:
    for old, new in RENAMES:
        code = re.sub(rf"\b{old}\b", new, code)
    return "# my own work\n" + code


def _joined(sources: dict[str, str]) -> str:
    return "\n\n".join(sources.values())


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_a_renamed_copy_and_a_copy_of_the_solution_are_flagged_and_honest_solutions_are_not(assignment):
    reference = _joined(solution_sources(assignment))
    honest = {f"honest-{k}": _joined({**solution_sources(assignment), **alt})
              for k, alt in enumerate(ALTERNATIVES[assignment])}
    codes = {**honest, "copier": _renamed(honest["honest-0"]), "from-the-key": reference,
             "blank": _joined(stub_sources(assignment))}
    found = compare(assignment, codes, reference, _joined(stub_sources(assignment)))
    assert found.compared == len(codes)
    pairs = {(m.first, m.second) for m in found.pairs}
    assert ("copier", "honest-0") in pairs
    assert {m.first for m in found.near_reference} == {"from-the-key"}
    assert all(m.similarity >= THRESHOLD for m in found.pairs + found.near_reference)
    # the honest ones, and the blank notebook (nothing but the released stubs), are not listed
    assert pairs == {("copier", "honest-0")}, found.pairs


def test_the_section_lists_the_pairs_with_their_similarity_and_says_it_changes_no_score():
    assignment = "bn-numpy-forward"
    reference = _joined(solution_sources(assignment))
    found = compare(assignment, {"ada": reference, "bob": _renamed(reference)}, reference,
                    _joined(stub_sources(assignment)))
    page = html_section([found])
    assert "ada" in page and "bob" in page and "100%" in page
    assert "changes no score" in page
