r"""The static delegation check: what the student's source uses, by the one policy.

:class:`Analysis` parses the student's cells (each on its own; IPython syntax is turned into
Python first) and finds, for each top-level function and class, the dotted names it uses:
imports (at the top or inside it), aliases (``F = torch.nn.functional``, ``from bnlib.numpy
import forward_train as ft``), ``__import__`` and ``importlib.import_module`` with a constant
name, and the notebook's own helper functions it calls (followed, transitively). Each name is
judged by :func:`autograder.inside.policy.rule`; the run-time watch inside the sandbox asks the
same rule about what actually ran.

TRUSTED SIDE: it reads the student's source as text and never runs it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

from autograder.inside.policy import FINITE_DIFFERENCES, NOTEBOOK, rule
from autograder.notebook import CELL_SEPARATOR

__all__ = ["Analysis", "parse"]

#: How :class:`Analysis` names ``<tensor>.backward()``, a method it cannot resolve, to the policy.
_TENSOR_BACKWARD = "torch.Tensor.backward"


class Analysis:
    """Which top-level functions and classes of a source use something the policy forbids.

    Args:
        source: the student's cells, joined with :data:`autograder.notebook.CELL_SEPARATOR`.
        family: ``"numpy"`` or ``"torch"``: the assignment's family.

    Attributes:
        uses: ``{name: {what: why}}``: what each definition uses that is forbidden anywhere,
            with the policy's reason (also through the helpers it calls: ``"bnlib.numpy.batch_mean
            (through helper)"``), and what each top-level alias is bound to.
        backward_uses: ``{name: {what: why}}``: what is forbidden only inside a hand-written
            backward pass (autograd; ``loss.backward()``). The judge reads it for the class whose
            backward the check grades.
    """

    #: What the notebooks' locked set-up cells import, and the checker cell defines (they are
    #: not part of the student's source).
    SETUP_ALIASES = {"np": "numpy", "numpy": "numpy", "torch": "torch", "nn": "torch.nn",
                     **{name: f"{NOTEBOOK}.{name}" for name in FINITE_DIFFERENCES}}

    def __init__(self, source: str, family: str):
        self.family = family
        self.aliases: dict[str, str] = dict(self.SETUP_ALIASES)
        self.defs: dict[str, list[ast.AST]] = {}
        self.uses: dict[str, dict[str, str]] = {}
        self.backward_uses: dict[str, dict[str, str]] = {}
        for chunk in source.split(CELL_SEPARATOR):
            tree = parse(chunk)
            if tree is not None:
                self._module(tree)
        self._propagate()

    # -- module level --------------------------------------------------------------------------

    def _module(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                self.aliases.update(_import_aliases(stmt))
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.aliases.pop(stmt.name, None)
                self.defs[stmt.name] = [stmt]
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                dotted = self._resolve(stmt.value, self.aliases) if stmt.value is not None else None
                for target in targets:
                    if isinstance(target, ast.Name):
                        if dotted:
                            self.aliases[target.id] = dotted
                        else:
                            self.aliases.pop(target.id, None)
                            self.defs.setdefault(target.id, []).append(stmt)
            else:  # if/try/with blocks at the top: look inside for defs and imports
                for node in ast.walk(stmt):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        self.aliases.update(_import_aliases(node))
                    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                        self.defs[node.name] = [node]

    def _resolve(self, node: ast.AST, aliases: Mapping[str, str]) -> str | None:
        """The dotted name an expression stands for (``F.batch_norm`` -> ``torch.nn.functional.batch_norm``)."""
        if isinstance(node, ast.Name):
            return aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value, aliases)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
            func = self._resolve(node.func, aliases) or getattr(node.func, "id", "")
            if func in ("__import__", "importlib.import_module") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    return arg.value
        return None

    # -- what each definition uses ---------------------------------------------------------------

    def _judge(self, what: str, dotted: str, anywhere: dict[str, str], backward: dict[str, str]) -> None:
        """File ``what`` (which stands for ``dotted``) under the policy's verdict on it."""
        why = rule(dotted, self.family)
        if why:
            anywhere[what] = why
            return
        why = rule(dotted, self.family, in_backward=True)
        if why:
            backward[what] = why

    def _scan(self, name: str, nodes: list[ast.AST]) -> tuple[dict[str, str], dict[str, str], set[str]]:
        anywhere: dict[str, str] = {}
        backward: dict[str, str] = {}
        calls: set[str] = set()
        local = dict(self.aliases)
        for top in nodes:
            for node in ast.walk(top):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    local.update(_import_aliases(node))
        for top in nodes:
            # a chain `torch.nn.functional.batch_norm` is judged whole, not at each of its prefixes
            inner = {id(node.value) for node in ast.walk(top) if isinstance(node, ast.Attribute)}
            for node in ast.walk(top):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for dotted in _imported(node):
                        self._judge(f"import {dotted}", dotted, anywhere, backward)
                elif isinstance(node, (ast.Name, ast.Attribute, ast.Call)) and id(node) not in inner:
                    dotted = self._resolve(node, local)
                    if dotted:
                        self._judge(dotted, dotted, anywhere, backward)
                    if isinstance(node, ast.Name) and node.id in self.defs and node.id != name:
                        calls.add(node.id)
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                        if node.func.attr == "backward" and not _is_super_call(node.func.value):
                            self._judge(f"{ast.unparse(node.func)}()", _TENSOR_BACKWARD, anywhere, backward)
        return anywhere, backward, calls

    def _propagate(self) -> None:
        calls_of = {}
        for name, nodes in self.defs.items():
            self.uses[name], self.backward_uses[name], calls_of[name] = self._scan(name, nodes)
        for name, dotted in self.aliases.items():  # bn_forward_train = bnlib.numpy.forward_train
            why = rule(dotted, self.family)
            if self.SETUP_ALIASES.get(name) != dotted and why:
                self.uses.setdefault(name, {})[dotted] = why
        changed = True
        while changed:
            changed = False
            for name, calls in calls_of.items():
                for callee in calls:
                    extra = {(x if "(through" in x else f"{x} (through {callee})"): why
                             for x, why in self.uses.get(callee, {}).items()}
                    if not extra.keys() <= self.uses[name].keys():
                        self.uses[name].update(extra)
                        changed = True


def _is_super_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def parse(source: str) -> ast.Module | None:
    """The AST of one cell, or ``None`` if it is not Python (even after IPython's transformations)."""
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    try:  # IPython syntax (%magics, !shell): let IPython turn it into Python first
        from IPython.core.inputtransformer2 import TransformerManager  # noqa: PLC0415 - 0.2 s, rarely needed

        return ast.parse(TransformerManager().transform_cell(source))
    except Exception:  # noqa: BLE001 - a cell nobody can parse uses nothing
        return None


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules (or module members) an import statement imports: ``import a.b`` imports ``a.b``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.module and node.level == 0:
        return [f"{node.module}.{a.name}" for a in node.names]
    return []


def _import_aliases(node: ast.Import | ast.ImportFrom) -> dict[str, str]:
    out = {}
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.asname:
                out[a.asname] = a.name
            else:
                out[a.name.split(".")[0]] = a.name.split(".")[0]
    elif node.module and node.level == 0:
        for a in node.names:
            out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out
