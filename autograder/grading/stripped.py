"""A notebook that lost its nbgrader metadata: graded from what it defines.

A student who re-creates the notebook in another editor, or pastes the cells into a new one,
hands in code cells without nbgrader's ``metadata.nbgrader``. nbgrader would then put every
graded test cell back after its predecessor in the released notebook, which is not there, so
at the top, before the student's code: every check fails and the notebook scores 0 as
``graded``. Here instead (:func:`with_checks`):

1. a student's cell whose source is that of one of the released notebook's locked cells (the
   set-up cell, a visible test pasted along) gets that cell's metadata back, so that it stays
   where it is and counts as the course's code, not the student's (the judge's
   ``student_source`` leaves it out);
2. the released notebook's locked set-up cells (those before its first solution cell) that
   are not there go first;
3. the student's code cells run in their order;
4. then every graded test cell, from the gradebook, in the released notebook's order (a pasted
   copy of one is dropped: the hidden checks run once, after the definitions).

Only a notebook with neither metadata nor any of the graded names
(:data:`autograder.course.spec.INTERFACE`) is not run (:func:`nothing_to_grade`).
"""

from __future__ import annotations

import ast
import re

import nbformat
from nbgrader.api import Gradebook

from autograder.notebook import nbgrader_meta
from autograder.output.feedback import released_source

__all__ = ["has_metadata", "defined_names", "with_checks", "nothing_to_grade", "graded_from_definitions"]

#: IPython's magics and shell escapes, which are not Python (left out when reading definitions).
_MAGIC = re.compile(r"^\s*[%!].*$", re.M)


def has_metadata(nb) -> bool:
    """Whether any cell of `nb` still has nbgrader's metadata."""
    return any(nbgrader_meta(cell) for cell in nb.cells)


def defined_names(nb) -> set[str]:
    """The names the code cells of `nb` define at top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(_MAGIC.sub("", str(cell.get("source", ""))))
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def nothing_to_grade(wanted: tuple[str, ...]) -> str:
    """The reason for a notebook with neither metadata nor any graded name."""
    return ("the notebook has no nbgrader metadata (re-created in another editor, or its cells pasted into a "
            f"new notebook) and defines none of the graded names ({', '.join(wanted)}): there is nothing to "
            "grade; write your code in the notebook you were given")


def graded_from_definitions(wanted: tuple[str, ...], found: set[str]) -> str:
    """The note for a notebook graded from its definitions."""
    missing = [n for n in wanted if n not in found]
    return ("the notebook had no nbgrader metadata (re-created in another editor, or its cells pasted into a new "
            "notebook): graded from its definitions, its code cells in order, then the hidden checks"
            + (f"; it does not define {', '.join(missing)}" if missing else ""))


def _meta(cell, points=None) -> dict:
    grade = points is not None
    return {"grade": grade, "grade_id": cell.name, "locked": True, "solution": False, "schema_version": 3,
            **({"points": points} if grade else {})}


def with_checks(nb, db_url: str, assignment: str):
    """`nb` (without metadata) made gradable: see the module docstring for the four steps."""
    with Gradebook(db_url) as gb:
        source = gb.find_notebook(assignment, assignment)
        points = {c.name: float(c.max_score) for c in source.grade_cells}
        solutions = {c.name for c in source.solution_cells}
        cells = [(c, released_source(c.source).strip()) for c in source.source_cells]
    locked = {text: c for c, text in cells if c.locked and c.name not in points and text}
    graded = {text for c, text in cells if c.name in points and text}
    student = []
    for cell in nb.cells:
        text = str(cell.get("source", "")).strip()
        if cell.get("cell_type") == "code" and text in graded:
            continue  # a pasted copy of a graded check: it runs once, at the end
        if cell.get("cell_type") == "code" and text in locked:
            cell.setdefault("metadata", nbformat.NotebookNode())["nbgrader"] = _meta(locked[text])
        student.append(cell)
    present = {nbgrader_meta(c).get("grade_id") for c in student}
    first_solution = next((i for i, (c, _) in enumerate(cells) if c.name in solutions), len(cells))
    setup = [nbformat.v4.new_code_cell(c.source, metadata={"nbgrader": _meta(c)})
             for c, _ in cells[:first_solution] if c.locked and c.name not in points and c.name not in present
             and c.cell_type == "code"]
    checks = [nbformat.v4.new_code_cell(c.source, metadata={"nbgrader": _meta(c, points[c.name])})
              for c, _ in cells if c.name in points and c.cell_type == "code"]
    nb.cells = setup + student + checks
    return nb
