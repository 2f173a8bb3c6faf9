"""The autograder's imports: no circles (function-local imports counted), and every function-local import says why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from autograder.paths import PACKAGE_DIR, REPO_DIR

#: The folders and modules whose function-local imports this checks (the rest of the package
#: follows the same rule; widen this as it does).
CHECKED = ("sandbox", "grading", "output", "nbgrader_ext", "inside/executor.py", "inside/protocol.py",
           "inside/timing.py", "cli.py", "paths.py", "notebook.py", "synthetic.py", "bench_grading.py")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        name = ".".join(path.relative_to(REPO_DIR).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules `path` imports anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports the module; `from module import name` the module
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of `graph`, or []."""
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return []


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_the_autograder_has_no_import_circles():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycle(graph) == []


def _checked_files() -> list[Path]:
    files = []
    for entry in CHECKED:
        path = PACKAGE_DIR / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


@pytest.mark.parametrize("path", _checked_files(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_every_function_local_import_says_why(path):
    lines = path.read_text().splitlines()
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, (ast.Import, ast.ImportFrom)):
                here, above = lines[inner.lineno - 1], lines[inner.lineno - 2].strip()
                reason = re.search(r"noqa: [A-Z0-9, ]*PLC0415 - \S", here) or (
                    "noqa: " in here and "PLC0415" in here and above.startswith("#"))
                if not reason:
                    missing.append(f"line {inner.lineno}: {here.strip()}")
    assert not missing, "function-local imports without a reason:\n" + "\n".join(missing)
