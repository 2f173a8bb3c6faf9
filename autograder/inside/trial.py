r"""A trial: one run of one scenario on one namespace, calling the student's code and keeping what comes back.

A scenario's body never touches the student's objects directly: it looks them up with
:meth:`Trial.fn`, calls them with :meth:`Trial.call` (which watches for delegation and for
arguments changed in place, and turns any exception into :class:`StudentCodeFailed`), and keeps
results with :meth:`Trial.array` and :meth:`Trial.fact`. :meth:`Trial.finish` hands back the
:class:`~autograder.inside.record.Record`.

This module runs INSIDE the sandbox: the standard library and NumPy only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from autograder.inside.record import Record
from autograder.inside.watch import Watch, foreign_globals

__all__ = ["Trial", "StudentCodeFailed", "Missing", "to_numpy", "type_name"]


class StudentCodeFailed(Exception):
    """The student's code raised while a scenario called it; ends the scenario.

    Args:
        call: what was called, as the feedback shows it.
        exc: the exception it raised (or a message).
    """

    def __init__(self, call: str, exc: BaseException | str):
        self.call = call
        self.exc = exc
        super().__init__(call)


class Missing(Exception):
    """The notebook does not define a name the check needs; ends the scenario."""


class Trial:
    """Calls the student's code for a scenario and collects what comes back.

    Args:
        namespace: the notebook's ``globals()``.
        family: ``"numpy"`` or ``"torch"``: which delegation policy applies.
        options: the scenario's options (``{"device": ...}`` for the device check).
        backward_of: the student's class whose ``backward`` must be hand-written: calls made
            while it runs are watched for autograd. Default: none.
    """

    def __init__(self, namespace: Mapping[str, Any], family: str, options: Mapping[str, Any],
                 backward_of: str = ""):
        self.ns = namespace
        self.family = family
        self.options = dict(options)
        self.backward_of = backward_of
        self.record = Record(facts={"calls": {}})
        self._foreign: set[str] = set()
        self._backward_code: tuple = ()

    # -- looking things up ---------------------------------------------------------------------

    def fn(self, name: str) -> Any:
        """The student's object called ``name``; ends the scenario if the notebook lacks it."""
        try:
            obj = self.ns[name]
        except (KeyError, TypeError):
            self.record.facts["missing"] = name
            raise Missing(name) from None
        seen: dict[str, str] = self.record.facts.setdefault("globals", {})
        for gname, where in foreign_globals(obj, self.family):
            seen[gname] = where
        if name == self.backward_of:
            code = getattr(getattr(obj, "backward", None), "__code__", None)
            self._backward_code = (code,) if code is not None else ()
        return obj

    # -- calling -------------------------------------------------------------------------------

    def call(self, label: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, with delegation watched and in-place changes of arrays noted.

        ``label`` says, in the feedback, what was called (``"bn_forward_train(x, gamma, beta,
        eps=1e-05) with x of shape (8, 5)"``). A failure ends the scenario with an ``error`` fact.
        """
        # ndarray methods (C code) only: a notebook can patch np.array_equal, not these
        before = [(i, a.shape, a.tobytes()) for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        try:
            with Watch(self.family, self._foreign, self._backward_code):
                result = fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:  # the student's code, whatever it raises
            raise StudentCodeFailed(label, exc) from None
        for i, shape, old in before:
            new = args[i]
            if new.shape != shape or new.tobytes() != old:
                self.record.facts.setdefault("modified", []).append(f"argument {i + 1} of {label}")
        return result

    def unpack(self, label: str, result: Any, n: int, what: str) -> tuple:
        """Split a returned tuple of ``n`` items, or end with a clear error."""
        if isinstance(result, (tuple, list)) and len(result) == n:
            return tuple(result)
        got = f"a {type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        raise StudentCodeFailed(label, TypeError(f"expected it to return {what}, got {got}"))

    # -- recording -----------------------------------------------------------------------------

    def array(self, key: str, value: Any, how: str) -> None:
        """Keep ``value`` as a float64 array under ``key``; ``how`` says how it was computed."""
        self.record.facts["calls"][key] = how
        arr = to_numpy(value)
        if arr is None:
            self.record.facts.setdefault("types", {})[key] = type_name(value)
            return
        if self.family == "numpy" and not isinstance(value, np.ndarray) and np.ndim(value) > 0:
            self.record.facts.setdefault("types", {})[key] = type_name(value)
        self.record.arrays[key] = arr

    def fact(self, key: str, value: Any) -> None:
        """Keep a JSON-able fact."""
        self.record.facts[key] = value

    def finish(self) -> Record:
        """The record, with the delegation the watch saw."""
        if self._foreign:
            self.record.facts["foreign"] = sorted(self._foreign)
        if not self.record.facts.get("globals"):
            self.record.facts.pop("globals", None)
        return self.record


def type_name(value: Any) -> str:
    """``"list"``, or ``"module.Class"`` for a type outside the builtins."""
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def to_numpy(value: Any) -> np.ndarray | None:
    """float64 (or int64 / bool) copy of an array, tensor or number; None if it is not one."""
    if hasattr(value, "detach") and hasattr(value, "device"):  # a torch tensor
        try:
            if value.device.type == "meta":
                return None
            value = value.detach().cpu()
            if value.is_floating_point():
                value = value.double()
            value = value.numpy()
        except Exception:
            return None
    try:
        arr = np.array(value)
    except Exception:
        return None
    if arr.dtype.kind == "f" or arr.dtype.kind == "c":
        return arr.real.astype(np.float64) if arr.dtype.kind == "c" else arr.astype(np.float64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        return arr
    return None
