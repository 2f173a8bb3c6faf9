"""Listings of library code without their docstrings.

A chapter shows a function or class of ``bnlib`` (or of ``book/support``) with
``literalinclude`` and ``:pyobject:``: the library's own source, never a copy. Its docstrings
are written for ``help()`` and API pages, in reStructuredText (``:math:`` roles, ``Args:``
lists, lines up to 120 characters), and repeat what the chapter around the listing says in
prose and typeset equations; on a page they are noise that scrolls sideways. This extension
removes them from every listing of a single Python function or class, the object's own and
those of its methods, and keeps everything else (code, comments, blank lines) as it is.

:func:`without_docstrings` is the one definition of what a listing shows;
``tests/test_book_code.py`` checks every built listing against it.
"""

from __future__ import annotations

import ast
import textwrap

from docutils import nodes
from sphinx.application import Sphinx

_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _docstrings(tree: ast.AST) -> list[ast.Expr]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, _DEFINITIONS) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                found.append(first)
    return found


def without_docstrings(source: str) -> str:
    """``source`` (one function or class) with its docstrings' lines removed.

    A body that was only a docstring gets ``...`` in its place, so the listing stays Python.
    Source that is not one function or class comes back unchanged.
    """
    code = textwrap.dedent(source)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return source
    if len(tree.body) != 1 or not isinstance(tree.body[0], _DEFINITIONS):
        return source
    lines = code.splitlines()
    drop: set[int] = set()
    replace: dict[int, str] = {}
    for doc in _docstrings(tree):
        rows = range(doc.lineno - 1, doc.end_lineno)
        parent = next(n for n in ast.walk(tree) if isinstance(n, _DEFINITIONS) and n.body and n.body[0] is doc)
        if len(parent.body) == 1:
            replace[rows[0]] = " " * doc.col_offset + "..."
            drop.update(rows[1:])
        else:
            drop.update(rows)
    return "\n".join(replace.get(k, line) for k, line in enumerate(lines) if k not in drop or k in replace)


def strip_listings(app: Sphinx, doctree: nodes.document) -> None:
    for block in doctree.findall(nodes.literal_block):
        if not str(block.get("source", "")).endswith(".py") or block.get("language") not in (None, "python"):
            continue
        text = block.astext()
        stripped = without_docstrings(text)
        if stripped != text:
            block.rawsource = stripped
            block.children = [nodes.Text(stripped)]


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", strip_listings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
