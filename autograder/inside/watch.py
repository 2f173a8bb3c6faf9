r"""The run-time delegation watch: which foreign functions the student's code reaches.

Two views, both judged by the one policy (:func:`autograder.inside.policy.rule`):

- :class:`Watch`, around every call a scenario makes into the student's code: a
  ``sys.setprofile`` hook sees each Python and C function that is called from outside its own
  library (the ways into a library: ``bnlib.numpy.forward_train`` called by the student, not
  the helpers it calls in turn, nor the top level of a module being imported) and keeps the
  forbidden ones; in ``bn-torch`` a ``TorchDispatchMode`` also sees each aten operator that
  runs, so a normalization kernel reached in any way is caught too. Calls made while the
  student's ``backward`` runs are judged ``in_backward`` (autograd is forbidden there).
- :func:`foreign_globals`, before the calls: a walk over the global names a student's function
  or class uses (its methods, nested functions, the notebook helpers it calls, its base
  classes), resolved to the modules, functions and classes they are bound to.

What is found becomes the record's ``foreign`` and ``globals`` facts; the judge turns them
into the verdict's reasons.

This module runs INSIDE the sandbox: the standard library and NumPy only (torch's dispatch
mode is imported where a ``bn-torch`` check starts watching).
"""

from __future__ import annotations

import dis
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from autograder.inside.policy import FINITE_DIFFERENCES, NOTEBOOK, rule

__all__ = ["Watch", "foreign_globals", "origin"]


class Watch:
    """Notes the forbidden functions that run while it is active (a context manager).

    Args:
        family: ``"numpy"`` or ``"torch"``: which policy applies.
        found: the set the dotted names of forbidden functions are added to.
        backward: code objects of the student's backward pass; calls made while one of them
            runs are judged ``in_backward``. Default: none.
    """

    def __init__(self, family: str, found: set[str], backward: Iterable[Any] = ()):
        self.family, self.found = family, found
        self.backward = frozenset(backward)
        self.depth = 0
        self.previous = None
        self.mode = None

    def _note(self, module: str, name: str, caller: Any) -> None:
        """Judge a call of ``module.name`` made by the frame ``caller``."""
        top = module.partition(".")[0]
        # a library calling itself: only the ways into it count (the notebook is no library: its
        # checker cell's functions count when the student's code calls them)
        caller_top = str(caller.f_globals.get("__name__", "")).partition(".")[0] if caller is not None else None
        if top != NOTEBOOK and caller_top == top:
            return
        dotted = f"{module}.{name}"
        if rule(dotted, self.family, self.depth > 0):
            self.found.add(dotted)

    def hook(self, frame, event, arg) -> None:
        if event == "call":
            code = frame.f_code
            if code in self.backward:
                self.depth += 1
            if code.co_name != "<module>":  # importing a module runs its top level: not a use of it
                self._note(str(frame.f_globals.get("__name__", "")), code.co_name, frame.f_back)
        elif event == "return":
            if frame.f_code in self.backward:
                self.depth -= 1
        elif event == "c_call":
            module = getattr(arg, "__module__", None)
            if not module:
                owner = getattr(arg, "__self__", None)
                module = type(owner).__module__ if owner is not None else ""
            self._note(str(module), str(getattr(arg, "__name__", "?")), frame)

    def __enter__(self) -> Watch:
        self.previous = sys.getprofile()
        sys.setprofile(self.hook)
        if self.family == "torch":
            self.mode = _kernel_recorder()(self.found)
            self.mode.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        try:
            if self.mode is not None:
                self.mode.__exit__(*exc)
                self.mode = None
        finally:
            sys.setprofile(self.previous)
        return False


@cache
def _kernel_recorder() -> type:
    """A ``TorchDispatchMode`` class that notes every forbidden aten operator that runs."""
    from torch.utils._python_dispatch import TorchDispatchMode  # noqa: PLC0415 - torch: bn-torch's sandbox only

    class KernelRecorder(TorchDispatchMode):
        def __init__(self, found: set[str]):
            super().__init__()
            self.found = found

        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            # nothing is compiled in here; saying so spares importing torch._dynamo (1-2 s)
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)  # "aten.native_batch_norm.default"
            if rule(name, "torch"):
                self.found.add(name)
            return func(*args, **(kwargs or {}))

    return KernelRecorder


# --------------------------------------------------------------------------------------------
# The student's globals
# --------------------------------------------------------------------------------------------


def origin(value: Any) -> str | None:
    """Dotted origin of a module, function or class (``"bnlib.numpy"``, ``"torch.nn.functional.batch_norm"``)."""
    if type(value).__name__ == "module":
        return getattr(value, "__name__", None)
    module = getattr(value, "__module__", None)
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if isinstance(module, str) and isinstance(name, str) and module != "__main__":
        return f"{module}.{name}"
    return None


def foreign_globals(obj: Any, family: str, limit: int = 200) -> list[tuple[str, str]]:
    """``(global name, origin)`` for each forbidden thing the student's function or class uses.

    Walks the code objects (methods, nested functions, helpers defined in the notebook) and
    resolves each global name, each ``module.attr`` chain (``F.batch_norm``) and each base
    class; keeps those the policy forbids in ``family``. At most ``limit`` code objects are read.
    """
    found: list[tuple[str, str]] = []
    seen_code: set = set()
    todo: list[tuple[Any, dict]] = []
    home = getattr(obj, "__module__", "__main__")  # the notebook (or the student's own module)

    def add(o: Any) -> None:
        if isinstance(o, (staticmethod, classmethod)):
            o = o.__func__
        if isinstance(o, property):
            for f in (o.fget, o.fset, o.fdel):
                if f is not None:
                    add(f)
            return
        if isinstance(o, type):
            if o.__module__ != home:
                return
            for base in o.__mro__[1:]:
                where = origin(base)
                if where and rule(where, family):
                    found.append((f"{o.__name__} base", where))
            for v in vars(o).values():
                add(v)
            return
        code = getattr(o, "__code__", None)
        glb = getattr(o, "__globals__", None)
        if code is not None and glb is not None:
            todo.append((code, glb))

    add(obj)
    while todo and len(seen_code) < limit:
        code, glb = todo.pop()
        if code in seen_code:
            continue
        seen_code.add(code)
        for const in code.co_consts:
            if hasattr(const, "co_names"):
                todo.append((const, glb))
        for name in code.co_names:
            if name not in glb:
                continue
            value = glb[name]
            where = origin(value)
            if where and rule(where, family):
                found.append((name, where))
            elif callable(value) and getattr(value, "__module__", None) == home:
                if getattr(value, "__name__", None) in FINITE_DIFFERENCES:  # the notebook's checker cell
                    found.append((name, f"{NOTEBOOK}.{value.__name__}"))
                else:
                    add(value)
        for dotted, where in _attribute_chains(code, glb):
            if rule(where, family):
                found.append((dotted, where))
    return found


def _attribute_chains(code: Any, glb: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(dotted name, origin)`` for each ``module.attr[.attr]`` the bytecode loads from a global module."""
    out = []
    chain: list[str] = []
    value: Any = None

    def flush() -> None:
        if len(chain) > 1:
            where = origin(value)
            if where:
                out.append((".".join(chain), where))

    for ins in dis.get_instructions(code):
        if ins.opname == "LOAD_GLOBAL":
            flush()
            chain, value = [], None
            name = str(ins.argval)
            if type(glb.get(name)).__name__ == "module":
                chain, value = [name], glb[name]
        elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and chain:
            value = getattr(value, str(ins.argval), None)
            chain.append(str(ins.argval))
            if value is None:
                chain = []
        else:
            flush()
            chain, value = [], None
    flush()
    return out
