"""A notebook's cells as nbgrader marks them: which is a test, what a test checks, what the student wrote.

nbgrader keeps these rules in ``nbgrader.utils`` (``is_grade``, ``is_solution``); they are
written again here, once, because importing ``nbgrader.utils`` takes about two seconds and
its functions need ``NotebookNode`` cells, while the grader also reads notebooks as plain dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["CELL_SEPARATOR", "nbgrader_meta", "grade_id", "is_solution", "is_test", "title", "student_source"]

#: Joins the cells in :func:`student_source` (each cell is parsed on its own).
CELL_SEPARATOR = "\n# ---- next cell ----\n"


def nbgrader_meta(cell: Mapping[str, Any]) -> dict:
    """The cell's nbgrader metadata (empty when it has none, or none that is a dict)."""
    meta = (cell.get("metadata") or {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def grade_id(cell: Mapping[str, Any]) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def is_solution(cell: Mapping[str, Any]) -> bool:
    """A cell the student writes (nbgrader's ``solution``)."""
    return bool(nbgrader_meta(cell).get("solution"))


def is_test(cell: Mapping[str, Any]) -> bool:
    """An autograded test cell: code, graded, and not a solution (nbgrader's "autograder tests")."""
    meta = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def title(source: str) -> str:
    """What a test cell checks: the first line of its docstring."""
    m = re.match(r'\s*(?:#[^\n]*\n\s*)*[rRuU]?("""|\'\'\')\s*(.*?)\s*\1', source, re.S)
    return m.group(2).strip().split("\n")[0] if m else ""


def _text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def student_source(nb: Mapping[str, Any]) -> str:
    """The student's code in a notebook: solution cells, and code cells the student added.

    Locked cells and test cells are left out (nbgrader restores them from the gradebook, and
    the visible tests may use ``nn.BatchNorm1d`` for comparison). ``nb``: an ``nbformat``
    notebook or its dict. Cells are joined with :data:`CELL_SEPARATOR`.
    """
    parts = []
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        meta = nbgrader_meta(cell)
        if meta.get("locked") or (meta.get("grade") and not meta.get("solution")):
            continue
        parts.append(_text(cell.get("source", "")))
    return CELL_SEPARATOR.join(parts)
