"""autograder.inside: the package mounted into every sandbox imports only what the sandbox offers.

Inside the sandbox there is the standard library, NumPy, torch (bn-torch only) and the package
itself: never bnlib, nbgrader or the trusted side. The probe's local mode, which runs outside any
sandbox, is the one place that imports the judge. Checked on the source (AST), every file.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSIDE = ROOT / "autograder" / "inside"
FILES = sorted(p for p in INSIDE.rglob("*.py") if "__pycache__" not in p.parts)

#: Files that may import torch, inside a function (their sandbox may lack it).
TORCH_USERS = {"scenarios/bn_torch.py", "timing.py", "watch.py"}
#: (file, module) imports of the trusted side allowed inside a function: local mode only.
TRUSTED_EXCEPTIONS = {("probe.py", "autograder")}


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(module, at module level, line)`` for each import of ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}:{node.lineno}: relative import"
            out.append((node.module, id(node) in top, node.lineno))
    return out


def test_there_are_files_to_check():
    names = {str(p.relative_to(INSIDE)) for p in FILES}
    assert {"probe.py", "policy.py", "watch.py", "trial.py", "scenarios/__init__.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(INSIDE)) for p in FILES])
def test_inside_imports_only_the_standard_library_numpy_and_itself(path):
    name = str(path.relative_to(INSIDE))
    wrong = []
    for module, at_top, line in _imports(path):
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__" or top == "numpy":
            continue
        if module == "autograder.inside" or module.startswith("autograder.inside."):
            continue
        if top == "torch" and name in TORCH_USERS and not at_top:
            continue
        if (name, module) in TRUSTED_EXCEPTIONS and not at_top:
            continue
        wrong.append(f"line {line}: {module}" + ("" if not at_top else " (at module level)"))
    assert not wrong, f"autograder/inside/{name} imports what the sandbox does not offer: {wrong}"


def test_the_sandbox_mounts_every_file_of_inside():
    from autograder.sandbox.mounts import project_files

    mounted = {inside for _, inside in project_files()}
    for path in FILES:
        assert str(path.relative_to(ROOT)) in mounted


def _graph(package: Path) -> dict[str, set[str]]:
    """Module-level imports between the modules of ``package`` (function-local ones make no circle)."""
    modules = {}
    for path in package.rglob("*.py"):
        if "__pycache__" not in path.parts:
            parts = path.relative_to(package.parent).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from package import name`: the package, and the submodule when name is one
                edges |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def test_autograder_has_no_import_circles():
    graph = _graph(ROOT / "autograder")
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles
