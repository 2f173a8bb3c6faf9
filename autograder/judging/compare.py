r"""Comparing records: a student's arrays and facts against the reference's, and against a wrong variant's.

Arrays are compared in float64 with a relative tolerance on the max norm
(:func:`relative_error`, ``Scenario.rtol``); facts listed in ``Scenario.compare_facts`` must be
equal. :func:`problems` lists what is wrong, in the words the feedback uses; :func:`same` says
whether a student's record looks like a wrong variant's, to name the mistake.

TRUSTED SIDE: it reads records, never the student's objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from autograder.inside.scenarios import Record, Scenario

__all__ = ["FLOOR", "relative_error", "problems", "same"]

#: Arrays whose largest entry is below this are compared in absolute terms (all inputs are O(1)).
FLOOR = 1e-6
#: Two of the student's own arrays that must agree (``Scenario.same_arrays``) may differ by this.
_CONSISTENT = 1e-9


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Max-norm relative error, ``max|got - want| / max|want|``; ``inf`` where finiteness differs.

    Below :data:`FLOOR` the scale is the floor: two answers that are both zero up to rounding
    (a batch of one normalizes to exactly beta = 0, or to 1e-14) agree.
    """
    if got.shape != want.shape or not np.array_equal(np.isfinite(got), np.isfinite(want)):
        return float("inf")
    finite = np.isfinite(want)
    if not finite.any():
        return 0.0 if np.array_equal(got, want, equal_nan=True) else float("inf")
    diff = float(np.max(np.abs(got[finite] - want[finite])))
    scale = max(float(np.max(np.abs(want[finite]))), FLOOR)
    return diff / scale


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _excerpt(got: np.ndarray, want: np.ndarray) -> str:
    """Where they differ most: ``at [2, 1], expected 0.83, got 0.82``."""
    g, w = np.atleast_1d(got), np.atleast_1d(want)
    bad = ~np.isclose(g, w, rtol=1e-9, atol=0, equal_nan=True)
    err = np.where(np.isfinite(g) & np.isfinite(w), np.abs(g - w), np.inf)
    err = np.where(bad, err, -1)
    idx = np.unravel_index(int(np.argmax(err)), g.shape)
    where = "" if want.ndim == 0 else f" at {[int(i) for i in idx]}"
    return f"{where}, expected {_fmt(w[idx])}, got {_fmt(g[idx])}"


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) < 300 else text[:297] + "..."


def _array_problems(sc: Scenario, student: Record, ref: Record, keys: Iterable[str]) -> list[str]:
    found = []
    types = student.facts.get("types", {})
    for key in keys:
        want = ref.arrays[key]
        how = "- " + ref.facts.get("calls", {}).get(key, key)
        got = student.arrays.get(key)
        if got is None:
            kind = types.get(key)
            found.append(f"{how}: expected an array of shape {want.shape}, got {f'a {kind}.' if kind else 'nothing.'}")
            continue
        if got.shape != want.shape:
            found.append(f"{how}: expected shape {want.shape}, got shape {got.shape}.")
            continue
        err = relative_error(got, want)
        if err > sc.rtol:
            size = "" if not np.isfinite(err) else f" (largest difference {err:.2g} of the largest value)"
            found.append(f"{how}: wrong{_excerpt(got, want)}{size}.")
    return found


def _meta_cannot_tell(err: Mapping[str, Any]) -> bool:
    """A data-dependent call (``.item()``) that the meta device cannot run: not a device bug."""
    text = str(err.get("message", ""))
    return "meta" in text and ("item()" in text or "data-dependent" in text or "Cannot copy out of meta" in text)


def _inconsistent(x: np.ndarray | None, y: np.ndarray | None) -> bool:
    return x is None or y is None or x.shape != y.shape or relative_error(x, y) > _CONSISTENT


def problems(sc: Scenario, student: Record, ref: Record) -> tuple[list[str], str]:
    """The problems with a student's record (none: passed), and a note on diagnostic arrays.

    Each problem is one line of feedback: what was called, what was expected, what came back.
    The note says when the diagnostics (``diag_`` arrays, such as the forward pass under a
    backward check) are wrong too.
    """
    facts = student.facts
    if "error" in facts:
        err = facts["error"]
        if err.get("type") == "NotImplementedError":
            return [f"- {err['call']} raised NotImplementedError: it is not implemented yet."], ""
        if sc.check_id == "module_device" and _meta_cannot_tell(err):
            return [], ""
        return [f"- {err['call']} raised {err['type']}: {err['message']}"], ""
    keys = [k for k in ref.arrays if not k.startswith("diag_")]
    found = _array_problems(sc, student, ref, keys)
    if sc.pure and facts.get("modified"):
        found.append(
            "- Your code changed its arguments in place ("
            + "; ".join(facts["modified"][:2])
            + "): leave them as they were and return new arrays."
        )
    for a, b in sc.same_arrays:
        if _inconsistent(student.arrays.get(a), student.arrays.get(b)):
            how = student.facts.get("calls", {})
            found.append(f"- {how.get(a, a)} and {how.get(b, b)} differ: the same cache must give the same result.")
    for key in sc.compare_facts:
        if facts.get(key) != ref.facts.get(key):
            found.append(f"- {key}: expected {_show(ref.facts.get(key))}, got {_show(facts.get(key))}.")
    diag = ""
    diag_keys = [k for k in ref.arrays if k.startswith("diag_")]
    if found and diag_keys and _array_problems(sc, student, ref, diag_keys):
        diag = (
            "Your forward pass is wrong too (its output y differs from the reference): the "
            "gradients are checked against the right forward pass, so fix the forward first."
        )
    return found, diag


def same(sc: Scenario, a: Record, b: Record) -> bool:
    """Whether a student's record ``a`` looks like a wrong variant's record ``b``.

    Errors match on the call, the exception type and the message. Otherwise the graded arrays
    must agree (the diagnostic ones too when the scenario grades none: then they are the
    evidence), and so must the compared facts. For consistency checks (``same_arrays``) the
    evidence is WHICH kinds of pairs disagree, not the numbers, which depend on how the
    student wrote the rest.
    """
    ea, eb = a.facts.get("error"), b.facts.get("error")
    if ea or eb:
        return bool(ea and eb) and all(ea.get(k) == eb.get(k) for k in ("call", "type", "message"))
    if sc.same_arrays:
        return _inconsistencies(sc, a) == _inconsistencies(sc, b)
    graded = [k for k in b.arrays if not k.startswith("diag_")] or list(b.arrays)
    tol = max(sc.rtol, 1e-6)
    for key in graded:
        want, got = b.arrays[key], a.arrays.get(key)
        if got is None or got.shape != want.shape or relative_error(got, want) > tol:
            return False
    if sc.pure and bool(a.facts.get("modified")) != bool(b.facts.get("modified")):
        return False
    return all(a.facts.get(k) == b.facts.get(k) for k in sc.compare_facts)


def _inconsistencies(sc: Scenario, r: Record) -> frozenset:
    """The kinds of ``same_arrays`` pairs that disagree: ``{("first", "later"), ...}``."""
    kinds = set()
    for a, b in sc.same_arrays:
        if _inconsistent(r.arrays.get(a), r.arrays.get(b)):
            kinds.add((a.rsplit("_", 1)[-1], b.rsplit("_", 1)[-1]))
    return frozenset(kinds)
