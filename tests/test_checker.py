"""autograder.course.checker: the gradient checker the released notebooks carry, and notebooks that need no bnlib."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from student_code import ASSIGNMENTS, fill, solution_sources

from autograder.course import checker
from autograder.course.spec import kind_of
from autograder.nbgrader_ext.release import ReleaseError, release
from autograder.paths import REPO_DIR, SOLUTIONS


def test_the_checker_cell_is_the_code_of_bnlib_gradcheck():
    cell = checker.cell_source()
    library = (REPO_DIR / "bnlib" / "gradcheck.py").read_text()
    for node in ast.parse(library).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            code = checker._without_examples(ast.get_source_segment(library, node))
            assert code in cell, node.name
    assert "from __future__" not in cell and "__all__" not in cell
    assert "bnlib" not in cell  # the docstrings' examples, which use the reference library, are left out


def test_the_checker_cell_checks_gradients_on_its_own():
    ns: dict = {"__name__": "__main__"}
    exec(compile(checker.cell_source(), "<checker cell>", "exec"), ns)
    x, dy = np.arange(1.0, 4.0), np.array([0.5, -1.0, 2.0])
    right = ns["check_gradients"](lambda x: x**3, {"x": x}, dy, {"x": 3 * x**2 * dy})
    wrong = ns["check_gradients"](lambda x: x**3, {"x": x}, dy, {"x": 2 * x * dy})
    assert bool(right) and not bool(wrong)
    assert "WRONG" in str(wrong)


def test_the_source_notebooks_carry_the_current_checker():
    assert checker.stale_cells() == []


def test_a_stale_checker_cell_is_found_rewritten_and_refused_by_the_release(tmp_path):
    root = tmp_path / "course"
    shutil.copytree(SOLUTIONS, root / "solutions")
    shutil.copy(REPO_DIR / "_config.yml", root / "_config.yml")
    path = root / "solutions" / "bn-torch" / "bn-torch.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == checker.CELL_ID)
    cell.source = cell.source.replace("tol: float = 1e-7", "tol: float = 1.0")  # a checker that passes anything
    nbformat.write(nb, path)
    assert checker.stale_cells(root / "solutions") == ["bn-torch"]
    with pytest.raises(ReleaseError, match="bn-torch.*differs from bnlib/gradcheck.py"):
        release(["bn-torch"], root=root, output=tmp_path / "release", db_url=f"sqlite:///{tmp_path / 'gb.db'}")
    assert checker.write_cells(root / "solutions") == ["bn-torch"]
    assert checker.stale_cells(root / "solutions") == []


# A notebook run top to bottom in a fresh interpreter where some packages cannot be imported.
_RUNNER = r"""
import importlib.abc, json, sys

blocked = set(sys.argv[2].split(","))


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Refuse())
try:
    import bnlib
    sys.exit("bnlib is importable: the test proves nothing")
except ModuleNotFoundError:
    pass
nb = json.load(open(sys.argv[1]))
ns = {"__name__": "__main__"}
for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), f"<cell {i}>", "exec"), ns)
print("ran to the end;", "torch loaded" if "torch" in sys.modules else "torch not loaded")
"""


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_released_notebook_runs_without_bnlib(student_release, tmp_path, assignment):
    """With the solutions filled in; the NumPy assignments without torch too."""
    released = nbformat.read(student_release / assignment / f"{assignment}.ipynb", as_version=4)
    path = tmp_path / f"{assignment}.ipynb"
    nbformat.write(fill(released, solution_sources(assignment)), path)
    blocked = ["bnlib", "autograder"] + (["torch"] if kind_of(assignment) == "numpy" else [])
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(path), ",".join(blocked)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("torch loaded" if kind_of(assignment) == "torch" else "torch not loaded")
    assert not [c for c in released.cells if "import bnlib" in c.source or "from bnlib" in c.source]
