"""The code the book shows is bnlib's own: no chapter carries a copy that could drift.

Chapters display library code with ``literalinclude`` and ``:pyobject:``. These tests check
that every such include names an existing object of a ``bnlib`` module, that the built page
shows exactly that object's current source (as ``book/_ext/listings.py`` shows it, without
its docstrings), and that no code cell of the book defines a function or class under a name
``bnlib`` uses (a hand-copied ``batch_mean`` would pass today and drift tomorrow).

A listing inside an ``{only} instructor`` block is shown by the instructor edition only
(``book/_ext/edition.py``): the instructor edition must show every listing, the student
edition the others and none of those.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"


def _extension(name: str):
    """A Sphinx extension of the book (``book/_ext/<name>.py``), imported as a module."""
    spec = importlib.util.spec_from_file_location(f"book_ext_{name}", BOOK / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


edition = _extension("edition")
listings = _extension("listings")


class Include(NamedTuple):
    chapter: str  #: e.g. "backward"
    path: str  #: as written, relative to the chapter
    pyobject: str | None
    student: bool = True  #: shown by the student edition too (not inside an instructor-only block)


_INCLUDE = re.compile(r"```\{literalinclude\}\s+(\S+)\s*\n((?::[^\n]*\n)*)")


def _student_view(markdown: str) -> str:
    """The chapter as the student edition shows it (its instructor-only blocks removed)."""
    return edition.strip_blocks(markdown, lambda expression: expression.strip() == "student", hide_solutions=True)


def includes() -> list[Include]:
    found = []
    for md in sorted(BOOK.glob("*.md")):
        text = md.read_text()
        student = {(m.group(1), m.group(2)) for m in _INCLUDE.finditer(_student_view(text))}
        for match in _INCLUDE.finditer(text):
            options = dict(re.findall(r":(\w+):\s*(.*)", match.group(2)))
            shown = (match.group(1), match.group(2)) in student
            found.append(Include(md.stem, match.group(1), options.get("pyobject"), shown))
    return found


def code_cells() -> list[tuple[str, str]]:
    """``(chapter, source)`` of every code cell and python code block in the book."""
    cells = []
    fence = re.compile(r"```(?:\{code-cell\}\s*ipython3|python|\{code-block\}\s*python)[^\n]*\n(.*?)```", re.S)
    for md in sorted(BOOK.glob("*.md")):
        for match in fence.finditer(md.read_text()):
            body = match.group(1)
            if body.startswith("---\n"):  # a cell's YAML options block
                body = body.split("\n---\n", 1)[1]
            body = "\n".join(line for line in body.splitlines() if not line.startswith(":"))
            cells.append((md.stem, body))
    return cells


#: The folders a chapter may display code from, and the package each one's modules belong to.
SHOWN = {REPO / "bnlib": "bnlib", BOOK / "support": "support"}


def module_name(path: Path) -> str:
    """The dotted module name of a file under one of the SHOWN folders."""
    for folder, package in SHOWN.items():
        if path.is_relative_to(folder):
            parts = path.relative_to(folder).with_suffix("").parts
            return ".".join((package, *parts))
    raise ValueError(f"{path} is outside {', '.join(map(str, SHOWN))}")


def bnlib_modules() -> list[Path]:
    return sorted(p for folder in SHOWN for p in folder.rglob("*.py") if p.stem != "__init__")


def bnlib_names() -> dict[str, str]:
    """Module-level functions and classes of every bnlib module: name -> module."""
    names = {}
    for path in bnlib_modules():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names[node.name] = module_name(path)
    return names


def resolve(include: Include):
    """The live object an include shows, and its module name."""
    target = (BOOK / include.path).resolve()
    module = module_name(target)
    obj = importlib.import_module(module)
    for part in include.pyobject.split("."):
        obj = getattr(obj, part)
    if not (inspect.isfunction(obj) or inspect.isclass(obj)) and inspect.isfunction(getattr(obj, "fn", None)):
        obj = obj.fn  # a Triton kernel (a JITFunction) wraps the Python function it compiles
    return obj, module


def test_the_book_includes_library_code():
    found = includes()
    assert len(found) >= 15, f"expected the chapters to display bnlib, found {len(found)} includes"
    shown = {i.pyobject for i in found}
    for name in ["batch_mean", "batch_var", "normalize", "scale_shift", "backward_staged",
                 "backward_compact", "update_running_stats", "forward_eval"]:
        assert name in shown, f"no chapter displays bnlib.numpy.{name}"


@pytest.mark.parametrize("include", includes(), ids=lambda i: f"{i.chapter}:{i.pyobject}")
def test_every_include_points_at_an_existing_bnlib_object(include):
    target = (BOOK / include.path).resolve()
    assert any(target.is_relative_to(folder) for folder in SHOWN), \
        f"{include.chapter} includes {include.path}, outside bnlib/ and book/support/"
    assert target.is_file(), f"{include.chapter} includes {include.path}, which does not exist"
    assert include.pyobject, f"{include.chapter} includes all of {include.path}: name the object with :pyobject:"
    obj, _ = resolve(include)
    assert inspect.isfunction(obj) or inspect.isclass(obj), f"{include.pyobject} is not a function or class"


def test_no_code_cell_redefines_a_bnlib_function():
    names = bnlib_names()
    copies = []
    for chapter, source in code_cells():
        try:
            tree = ast.parse(source)
        except SyntaxError as error:
            pytest.fail(f"a code cell of {chapter} is not valid Python: {error}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
                module = importlib.import_module(names[node.name])
                original = textwrap.dedent(inspect.getsource(getattr(module, node.name)))
                shown = textwrap.dedent(ast.get_source_segment(source, node, padded=True))
                if shown.strip() != original.strip():
                    copies.append(f"{chapter}: {node.name} differs from {names[node.name]}.{node.name}")
    assert not copies, "code cells define bnlib names with code that is not bnlib's:\n" + "\n".join(copies)


def test_the_graded_listings_are_for_the_instructor_edition_only():
    shown = {(Path(i.path).name, i.pyobject) for i in includes() if i.student}
    answers = [("numpy.py", name) for name in ["batch_mean", "batch_var", "normalize", "scale_shift",
                                               "forward_train", "_forward", "backward_staged", "backward_compact",
                                               "update_running_stats", "forward_eval", "BatchNorm1d.forward"]]
    answers += [("torch.py", "BatchNormFunction"), ("torch.py", "BatchNorm1d"), ("fused_torch.py", "backward_train")]
    for file, name in answers:
        assert (file, name) not in shown, \
            f"the student edition would display {file}'s {name}, an answer to a graded function"


def _blocks(html: Path, chapter: str) -> list[str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup((html / "book" / f"{chapter}.html").read_text(), "html.parser")
    return [textwrap.dedent(pre.get_text()).strip() for pre in soup.select("div.highlight pre")]


def _listing(include: Include) -> tuple[str, str]:
    obj, module = resolve(include)
    return listings.without_docstrings(textwrap.dedent(inspect.getsource(obj))).strip(), f"{module}.{include.pyobject}"


@pytest.mark.slow
def test_instructor_pages_show_the_current_library_source(instructor_build):
    assert instructor_build.returncode == 0, f"the instructor edition did not build:\n{instructor_build.log[-4000:]}"
    for chapter in sorted({i.chapter for i in includes()}):
        blocks = _blocks(instructor_build.html, chapter)
        for include in [i for i in includes() if i.chapter == chapter]:
            source, name = _listing(include)
            assert source in blocks, f"the instructor edition's {chapter} does not show the current source of {name}"


@pytest.mark.slow
def test_student_pages_show_only_the_listings_that_are_no_answers(book_build):
    assert book_build.returncode == 0
    for chapter in sorted({i.chapter for i in includes()}):
        blocks = _blocks(book_build.html, chapter)
        for include in [i for i in includes() if i.chapter == chapter]:
            source, name = _listing(include)
            if include.student:
                assert source in blocks, f"the student edition's {chapter} does not show the current source of {name}"
            else:
                assert source not in blocks, f"the student edition's {chapter} shows {name}, an instructor-only listing"
