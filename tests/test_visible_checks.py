"""The visible checks: every hidden check has a counterpart a student can run, and it catches the known mistakes.

``autograder.course.spec.VISIBLE`` maps each hidden check to the notebook's visible test cells
that check the same behaviour on other inputs. A hidden check without one fails here; and every
catalogued mistake (``student_code.VARIANTS``) that costs a hidden check's points makes one of
that check's visible cells fail too, so an honest student who passes every visible check rarely
loses a hidden point. The notebooks' cells run in this process, as a kernel would run them.
"""

from __future__ import annotations

import builtins
import contextlib
import io

import pytest
from student_code import ASSIGNMENTS, VARIANTS, edited, solution_notebook, solution_sources

from autograder.course.spec import VISIBLE
from autograder.inside.scenarios import SCENARIOS
from autograder.notebook import is_test, title


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _visible_cells(assignment: str) -> dict[str, str]:
    """grade_id -> source of the locked visible test cells (code, not graded, named test_*)."""
    return {_meta(c)["grade_id"]: c.source for c in solution_notebook(assignment).cells
            if c.cell_type == "code" and _meta(c).get("locked") and not _meta(c).get("grade")
            and _meta(c).get("grade_id", "").startswith("test_")}


def _hidden_checks(assignment: str) -> set[str]:
    return {_meta(c)["grade_id"] for c in solution_notebook(assignment).cells if is_test(c)}


def test_every_hidden_check_has_a_visible_counterpart():
    missing = sorted(set(SCENARIOS) - set(VISIBLE))
    assert not missing, f"hidden checks without a visible check in spec.VISIBLE: {missing}"
    assert not set(VISIBLE) - set(SCENARIOS), "spec.VISIBLE names checks that do not exist"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_visible_counterparts_are_test_cells_of_the_same_notebook(assignment):
    """A check graded in two notebooks (forward_train_output) has visible cells in each."""
    visible = _visible_cells(assignment)
    for check in _hidden_checks(assignment):
        assert set(VISIBLE[check]) & set(visible), (check, assignment, VISIBLE[check])


def test_every_named_visible_cell_exists():
    every = set().union(*(_visible_cells(a) for a in ASSIGNMENTS))
    assert not {c for cells in VISIBLE.values() for c in cells} - every


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_visible_check_opens_with_a_docstring_and_each_assert_says_where_to_read(assignment):
    import ast

    for gid, source in _visible_cells(assignment).items():
        assert title(source).startswith("Check"), f"{gid}: no one-line docstring saying what it checks"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Assert):
                is_gradcheck = "gradcheck" in ast.unparse(node.test)  # raises its own report on failure
                assert node.msg is not None or is_gradcheck, f"{gid}: a bare assert: {ast.unparse(node)}"


def _run(assignment: str, sources: dict[str, str]) -> set[str]:
    """Run the notebook top to bottom with ``sources`` in its solution cells; the visible cells that failed."""
    ns = {"__name__": "__main__", "__builtins__": builtins}
    failed = set()
    for cell in solution_notebook(assignment).cells:
        meta = _meta(cell)
        if cell.cell_type != "code" or is_test(cell):
            continue
        source = sources.get(meta.get("grade_id"), cell.source) if meta.get("solution") else cell.source
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(source, f"<{meta.get('grade_id')}>", "exec"), ns)
        except Exception:  # noqa: BLE001 - a failing visible check is what we look for
            failed.add(meta.get("grade_id"))
    return failed


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_solutions_pass_every_visible_check(assignment):
    assert _run(assignment, solution_sources(assignment)) == set()


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.key for v in VARIANTS])
def test_every_known_mistake_fails_a_visible_check_of_each_hidden_check_it_fails(variant):
    failed = _run(variant.assignment, edited(variant.assignment, variant.edits))
    visible = set(_visible_cells(variant.assignment))
    unseen = {check: VISIBLE[check] for check in variant.fails if not set(VISIBLE[check]) & visible & failed}
    assert not unseen, f"{variant.key} loses these hidden checks, but their visible checks pass: {unseen}"
