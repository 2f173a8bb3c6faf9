"""The package and its set-up: what a fresh clone relies on."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as pip vendors it
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Import graphs, from the source: every import statement, at the top or inside a function.
# ---------------------------------------------------------------------------------------------


def module_imports(package: Path) -> dict[str, set[str]]:
    """Every module of a package folder, recursively, and the modules it imports.

    Counts every import statement, at module level or inside a function (``ast.walk``);
    resolves relative imports; ``from a.b import c`` names ``a.b.c`` when that is a module of
    the package, else ``a.b``. ``import a.b.c`` names ``a.b.c`` only, not the packages above
    it, whose ``__init__`` merely runs first. Modules are named as they are imported: the
    folder's name is the top package (``bnlib.bench.core``, ``bnlib.bench`` for its
    ``__init__.py``).
    """
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package this module is in, up level - 1
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join(here + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    imported.add(full if full in modules else base)
        graph[name] = imported
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles among the graph's own modules: each group of modules that import one
    another, directly or not (a strongly connected component of two or more, or a module that
    imports itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(t for t in graph[v] if t in graph):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The graph's own modules that importing ``start`` can run, directly or not (``start`` included)."""
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo.extend(t for t in graph[v] if t in graph)
    return seen


BNLIB = module_imports(ROOT / "bnlib")


def test_the_import_graph_counts_function_local_and_relative_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import numpy\n\ndef f():\n    from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("from . import b\n")
    (package / "sub" / "b.py").write_text("from ..a import f\nfrom .. import c\n")
    (package / "c.py").write_text("import pkg.c\n")
    graph = module_imports(package)
    assert graph == {"pkg": set(), "pkg.a": {"numpy", "pkg.sub.b"}, "pkg.sub": {"pkg.sub.b"},
                     "pkg.sub.b": {"pkg.a", "pkg.c"}, "pkg.c": {"pkg.c"}}
    assert import_cycles(graph) == [["pkg.a", "pkg.sub.b"], ["pkg.c"]]


def test_bnlib_has_no_import_circle():
    assert "bnlib.triton" in BNLIB["bnlib.bench.kernels"]  # a function-local import, counted
    assert import_cycles(BNLIB) == []


def test_bnlib_depends_on_nothing_of_the_course():
    course = {"autograder", "book", "support", "solutions", "tests"}
    for module, imported in BNLIB.items():
        assert not {name.split(".")[0] for name in imported} & course, module


@pytest.mark.parametrize("module", ["bnlib", "bnlib.numpy", "bnlib.gradcheck", "bnlib.fused_numpy"])
def test_the_numpy_modules_import_nothing_of_torch(module):
    """Every import they can run, at the top or in a function, through the whole package."""
    imported = {name.split(".")[0] for m in reachable(BNLIB, module) for name in BNLIB[m]}
    assert imported <= {"__future__", "collections", "concurrent", "dataclasses", "math", "os", "threading", "typing",
                        "numpy", "bnlib"}, sorted(imported)


# ---------------------------------------------------------------------------------------------
# What a fresh clone relies on.
# ---------------------------------------------------------------------------------------------

WITHOUT_TORCH = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):  # as on a machine without the torch extra
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"No module named {name!r}")

sys.meta_path.insert(0, NoTorch())
try:
    import torch
except ImportError:
    print("torch cannot be imported")
import numpy as np
import bnlib, bnlib.numpy, bnlib.gradcheck, bnlib.fused_numpy

rng = np.random.default_rng(0)
x, dy = rng.normal(2, 3, size=(8, 3, 2)), rng.normal(size=(8, 3, 2))
for cls in (bnlib.numpy.BatchNorm1d, bnlib.fused_numpy.BatchNorm1d):
    layer = cls(3, dtype=np.float64)
    y = layer(x)
    dx = layer.backward(dy)
    print(cls.__module__, y.shape, dx.shape, np.round(y.mean(axis=(0, 2)), 12).tolist(),
          np.round(dx.sum(axis=(0, 2)), 12).tolist(), layer.num_batches_tracked)
x, dy, gamma, beta = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=3)
_, cache = bnlib.numpy.forward_train(x, gamma, beta)
dx, _, _ = bnlib.numpy.backward_compact(dy, cache)
def f(x):
    return bnlib.numpy.forward_train(x, gamma, beta)[0]
report = bnlib.gradcheck.check_gradients(f, {"x": x}, dy, {"x": dx})
print("gradcheck", bool(report), "torch" in sys.modules)
"""


def test_the_numpy_layers_work_without_torch():
    out = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "torch cannot be imported", out.stdout
    for line, module in zip(lines[1:3], ["bnlib.numpy", "bnlib.fused_numpy"], strict=True):
        assert line == f"{module} (8, 3, 2) (8, 3, 2) [0.0, 0.0, 0.0] [0.0, 0.0, 0.0] 1", out.stdout
    assert lines[3] == "gradcheck True False", out.stdout


def test_import_bnlib_loads_neither_torch_nor_triton():
    code = "import sys, bnlib; print('torch' in sys.modules, 'triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_numpy_and_torch_layers_import_together():
    code = "import bnlib.numpy, bnlib.torch; print(bnlib.numpy.BatchNorm1d, bnlib.torch.BatchNorm1d)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_torch_is_pinned_to_2_13_0():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in text
    assert re.search(r"^torch==2\.13\.0$", (ROOT / "constraints.txt").read_text(), re.M)


def test_torch_is_an_extra_that_make_setup_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == ["numpy>=1.26"]
    extras = project["optional-dependencies"]
    assert extras["torch"] == ["torch==2.13.0"]  # the one place torch is pinned
    for extra in ("triton", "book", "grader"):  # each needs torch, and pulls the extra in
        assert "bnlib[torch]" in extras[extra], extra
    assert not [r for e in extras.values() for r in e if r.startswith("torch") and r != "torch==2.13.0"]
    makefile = (ROOT / "Makefile").read_text()
    installed = re.search(r"^EXTRAS \?= (\S+)$", makefile, re.M).group(1).split(",")
    assert {"torch", "book", "grader", "dev", "triton"} <= set(installed), installed
    assert "-e '.[$(EXTRAS)]'" in makefile


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands[:2] == ["make", "make test"], commands
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci[-1].strip() == "exec make test"
