r"""The gradient checker that travels with the released notebooks, made from ``bnlib/gradcheck.py``.

Students need no reference library: the notebooks that check gradients (``bn-numpy-backward``,
``bn-torch`` and ``bn-conv``) carry the course's finite-difference checker in a locked cell of their own,
``grade_id`` :data:`CELL_ID`. That cell is not a copy kept by hand: :func:`cell_source` makes
it from ``bnlib/gradcheck.py`` (the code after the module docstring, without the
``from __future__`` import, which would change how every later cell of the notebook is
compiled, without ``__all__``, and without the docstrings' ``Example:`` sections, which use
the reference library students do not have), the release refuses a source notebook whose cell differs
(:func:`stale_cells`), and ``python -m autograder.course.checker`` writes the cell anew into
``solutions/``. A locked cell rather than a helper file beside the notebook because nbgrader
restores a locked cell before grading and the notebook then needs nothing else: not a second
download, not a file the sandbox would have to offer, not a path the student must get right.

The checker's functions are then in the student's namespace. A graded function that calls
them (finite differences in place of a hand-written backward pass) counts as delegation: see
:data:`autograder.inside.policy.FINITE_DIFFERENCES`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat

from autograder.inside.policy import FINITE_DIFFERENCES
from autograder.paths import REPO_DIR, SOLUTIONS

__all__ = ["CELL_ID", "ASSIGNMENTS", "SOURCE", "cell_source", "stale_cells", "write_cells"]

#: The ``grade_id`` of the locked cell that defines the checker.
CELL_ID = "gradcheck"
#: The assignments whose notebooks carry it.
ASSIGNMENTS = ("bn-numpy-backward", "bn-torch", "bn-conv")
#: Where the checker is written once.
SOURCE = REPO_DIR / "bnlib" / "gradcheck.py"

_HEADER = """\
# The course's gradient checker (the same code as the book's, so you need nothing installed
# but NumPy). Run this cell; the test cells below call check_gradients. Your graded functions
# must not call it: finite differences are a check of a backward pass, not a backward pass."""


def cell_source(source: str | None = None) -> str:
    """The checker cell's code: ``bnlib/gradcheck.py`` after its docstring, with a header.

    Args:
        source: the text of ``bnlib/gradcheck.py``. Default: the file itself.

    Raises:
        ValueError: the module no longer defines every function of :data:`FINITE_DIFFERENCES`.
    """
    text = SOURCE.read_text() if source is None else source
    tree = ast.parse(text)
    lines = text.splitlines()
    keep: list[str] = []
    defined = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(getattr(stmt, "value", None), ast.Constant):
            continue  # the module docstring
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            continue
        if isinstance(stmt, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in stmt.targets):
            continue
        if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            defined.add(stmt.name)
        start = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        keep.append("\n".join(lines[start - 1:stmt.end_lineno]))
    missing = set(FINITE_DIFFERENCES) - defined
    if missing:
        raise ValueError(f"{SOURCE} no longer defines {sorted(missing)}; update autograder/inside/policy.py")
    keep = [_without_examples(k) for k in keep]
    imports = [k for k in keep if k.startswith(("import ", "from "))]
    body = [k for k in keep if not k.startswith(("import ", "from "))]
    return _HEADER + "\n" + "\n".join(imports) + "\n\n\n" + "\n\n\n".join(body) + "\n"


def _without_examples(code: str) -> str:
    """``code`` without its docstrings' ``Example:`` sections (from that line to the closing quotes)."""
    out, skipping = [], False
    for line in code.splitlines():
        if line.strip() == "Example:":
            skipping = True
            continue
        if skipping and line.strip() == '"""':
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out)


def _cell(nb: nbformat.NotebookNode):
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == CELL_ID:
            return cell
    return None


def stale_cells(root: Path = SOLUTIONS) -> list[str]:
    """The assignments of :data:`ASSIGNMENTS` whose checker cell is missing or differs from :func:`cell_source`."""
    expected = cell_source()
    stale = []
    for name in ASSIGNMENTS:
        nb = nbformat.read(Path(root) / name / f"{name}.ipynb", as_version=4)
        cell = _cell(nb)
        if cell is None or cell.source.rstrip("\n") != expected.rstrip("\n"):
            stale.append(name)
    return stale


def write_cells(root: Path = SOLUTIONS) -> list[str]:
    """Write :func:`cell_source` into each notebook's checker cell; returns the notebooks changed.

    Raises:
        KeyError: a notebook of :data:`ASSIGNMENTS` has no cell with ``grade_id`` :data:`CELL_ID`.
    """
    expected = cell_source().rstrip("\n")
    changed = []
    for name in ASSIGNMENTS:
        path = Path(root) / name / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cell = _cell(nb)
        if cell is None:
            raise KeyError(f"{path} has no locked cell with grade_id {CELL_ID!r} for the checker")
        if cell.source != expected:
            cell.source = expected
            nbformat.write(nb, path)
            changed.append(name)
    return changed


if __name__ == "__main__":
    done = write_cells()
    print("updated:", ", ".join(done) if done else "nothing (every checker cell is up to date)")
    sys.exit(0)
