"""A notebook that lost its nbgrader metadata is graded from its definitions, the hidden checks last."""

from __future__ import annotations

import nbformat
import pytest

from autograder.grading.stripped import defined_names, graded_from_definitions, has_metadata, nothing_to_grade


def _nb(*sources, meta=None):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if meta:
        nb.cells[0].metadata["nbgrader"] = meta
    return nb


def test_a_notebook_without_nbgrader_entries_has_no_metadata():
    assert not has_metadata(_nb("x = 1"))
    assert not has_metadata(_nb("x = 1", meta={}))  # an emptied entry is none
    assert has_metadata(_nb("x = 1", meta={"grade_id": "setup", "locked": True}))


def test_defined_names_are_the_top_level_definitions_of_every_code_cell():
    nb = _nb("import numpy as np\n%matplotlib inline", "def bn_forward_train(x):\n    inner = 1\n    return x",
             "class BatchNorm1d:\n    pass", "a, (b, c) = 1, (2, 3)", "def broken(:", "x: int = 3")
    assert defined_names(nb) == {"np", "bn_forward_train", "BatchNorm1d", "a", "b", "c", "x"}


def test_the_reasons_name_the_cause_and_what_is_missing():
    wanted = ("bn_forward_train", "bn_forward_eval")
    assert "defines none of the graded names (bn_forward_train, bn_forward_eval)" in nothing_to_grade(wanted)
    note = graded_from_definitions(wanted, {"bn_forward_train"})
    assert "no nbgrader metadata" in note and note.endswith("it does not define bn_forward_eval")
    assert "does not define" not in graded_from_definitions(wanted, set(wanted))


@pytest.mark.slow
def test_the_checks_go_after_the_students_code_and_pasted_locked_cells_get_their_metadata(student_release):
    from autograder.grading.stripped import with_checks
    from autograder.notebook import grade_id, is_test, student_source

    a = "bn-numpy-forward"
    released = nbformat.read(student_release / a / f"{a}.ipynb", as_version=4)
    order = [grade_id(c) for c in released.cells if is_test(c)]
    for cell in released.cells:
        cell.metadata.pop("nbgrader", None)
    cells = len(released.cells)
    nb = with_checks(released, f"sqlite:///{student_release.parent / 'gradebook.db'}", a)
    tests = [i for i, c in enumerate(nb.cells) if is_test(c)]
    assert [grade_id(nb.cells[i]) for i in tests] == order
    assert tests == list(range(len(nb.cells) - len(order), len(nb.cells)))  # all at the end
    assert len(nb.cells) == cells  # the pasted copies of the checks were dropped, none added twice
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert grade_id(first_code) == "setup"  # the pasted set-up cell is the course's again, where it was
    assert "np.set_printoptions" not in student_source(nb)
