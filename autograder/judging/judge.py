r"""Verdicts: compares what a check saw in the student's notebook with bnlib, and names the mistake.

TRUSTED SIDE ONLY (it imports bnlib, which the sandbox hides). Stable API:

``verdict(check_id, record, seed, student_source="", options=None) -> Verdict``
    ``record``: the :class:`autograder.inside.scenarios.Record` the probe wrote for this check
    (``Record.load(channel_dir, check_id)``), or ``None`` when the check never ran (a timeout,
    a crash, a deleted cell). ``seed``: the one the sandbox was given. ``student_source``: the
    student's code (:func:`student_source` of the submitted notebook); used to spot delegation.
``Verdict(passed, message, mistake, delegated)``
    ``message`` is the feedback, plain text: what the check wants, what came back, what that
    looks like (a named mistake from :mod:`autograder.course.mistakes`) and where to read. Empty on success.
``student_source(nb) -> str``
    the code a student wrote in a notebook (solution cells and cells they added; never the
    locked test cells, whose content nbgrader restores anyway).
``failure_output(verdict) -> dict``
    the nbformat error output the autograder writes into a failed test cell (no traceback).

How a verdict is reached:

1. No record: the check did not run; 0 for this part, and the message says so.
2. Delegation: the check's functions (or helpers they call) use bnlib, PyTorch's batch-norm
   kernels (or layer/instance/group norm), torch in a NumPy assignment, or autograd inside
   ``BatchNormFunction.backward``. Seen in the source (an AST walk that follows imports,
   aliases and helper functions) and at run time (the probe's ``foreign`` and ``globals``
   facts). 0 for this part, and the message says why.
3. The scenario is replayed on bnlib's reference with the same seed. Arrays are compared in
   float64 with a relative tolerance on the max norm (``Scenario.rtol``: ``1e-6``, or ``1e-4``
   where ε's placement must not matter because another check grades it); facts listed in
   ``Scenario.compare_facts`` must be equal. Correct implementations (two-pass or one-pass
   variance, staged or fused, any cache layout) agree to about ``1e-12``; every catalogued
   mistake is off by far more (``tests/test_mistakes.py``).
4. On a failure, the scenario is replayed on each wrong variant of :mod:`autograder.course.mistakes` that
   touches the check's functions; the first whose results match the student's names the mistake.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from autograder.course.spec import READING
from autograder.inside import scenarios
from autograder.inside.scenarios import NORM_KERNELS, SCENARIOS, Record, Scenario
from autograder.notebook import CELL_SEPARATOR, student_source

__all__ = ["Verdict", "verdict", "student_source", "failure_output", "CELL_SEPARATOR", "READING"]

@dataclass(frozen=True)
class Verdict:
    """The outcome of one check.

    Attributes:
        passed: full points for this part.
        message: the feedback (empty when passed).
        mistake: the name of the matching :class:`autograder.course.mistakes.Mistake`, if one matched.
        delegated: the part scored 0 because the code delegated to a library.
    """

    passed: bool
    message: str = ""
    mistake: str | None = None
    delegated: bool = False




# --------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------


def verdict(
    check_id: str,
    record: Record | None,
    seed: int,
    student_source: str = "",
    options: Mapping[str, Any] | None = None,
) -> Verdict:
    """Judge one check. See the module docstring for the steps.

    Raises:
        KeyError: for an unknown ``check_id``.
        RuntimeError: if bnlib's reference itself fails the scenario (a bug of the course).
    """
    sc = SCENARIOS[check_id]
    want = f"This check wants: {sc.behaviour}."
    if record is None:
        return Verdict(
            False,
            f"{want}\nThis check did not run to the end: the notebook stopped before it (an error "
            "that ended the kernel, a time limit, or a cell that was deleted), so it scores 0.",
        )
    facts = record.facts
    if "probe_error" in facts:
        return Verdict(False, f"{want}\nThe check could not inspect your notebook: {facts['probe_error']}")

    reason = delegation(sc, record, student_source)
    if reason:
        return Verdict(
            False,
            f"{want}\n{reason}\nThe point of this assignment is to compute batch norm yourself, "
            "so this part scores 0 (whatever the numbers).",
            delegated=True,
        )
    if "missing" in facts:
        name = facts["missing"]
        return Verdict(
            False,
            f"{want}\n`{name}` is not defined when this check runs. Keep the name and the "
            "signature given in the notebook, and make sure its cell runs without error.",
        )

    options = dict(options or {})
    if "device" in facts and "device" not in options:
        options["device"] = _replay_device(str(facts["device"]))
    assignment = _assignment(sc)
    ref = _run_reference(check_id, assignment, seed, options)
    problems, diag = _compare(sc, record, ref)
    if not problems:
        return Verdict(True, "")

    unfinished = facts.get("error", {}).get("type") == "NotImplementedError"
    mistake = None if unfinished else _name_mistake(sc, record, ref, assignment, seed, options)
    lines = [want, *problems[:3]]
    if len(problems) > 3:
        lines.append(f"(and {len(problems) - 3} more differences of the same kind)")
    if diag:
        lines.append(diag)
    if mistake is not None:
        lines.append(f"This looks like {mistake.title}. {mistake.looks_like}")
        lines.append(f"Reread {mistake.read}.")
    else:
        lines.append(f"Reread {_reading(check_id)}.")
    return Verdict(False, "\n".join(lines), mistake=mistake.name if mistake else None)


def failure_output(v: Verdict) -> dict[str, Any]:
    """The nbformat ``error`` output for a failed check: the message, and no traceback."""
    first, _, rest = v.message.partition("\n")
    return {
        "output_type": "error",
        "ename": "CheckFailed",
        "evalue": first,
        "traceback": [f"CheckFailed: {v.message}"],
    }


def _reading(check_id: str) -> str:
    from autograder.course.mistakes import Reading

    stem, section = READING.get(check_id, ("assignments", "The graded notebooks"))
    return str(Reading(stem, section))


def _assignment(sc: Scenario) -> str:
    if sc.family == "torch":
        return "bn-torch"
    if any(t.startswith("bn_backward") for t in sc.targets):
        return "bn-numpy-backward"
    return "bn-numpy-forward"


def _replay_device(device: str) -> str:
    if device == "cuda":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# Records of the reference and of the wrong variants depend only on (check, seed, options):
# they are kept, so that grading a class with one seed computes each of them once.
_RECORDS: dict[tuple, Record | None] = {}
_RECORDS_MAX = 20_000


def _cached(key: tuple, make) -> Record | None:
    if key not in _RECORDS:
        if len(_RECORDS) >= _RECORDS_MAX:
            _RECORDS.clear()
        _RECORDS[key] = make()
    return _RECORDS[key]


def _run_reference(check_id: str, assignment: str, seed: int, options: Mapping[str, Any]) -> Record:
    from autograder.course.reference import reference

    def make() -> Record:
        names = reference(assignment)
        if assignment != "bn-torch":
            names = {**reference("bn-numpy-forward"), **reference("bn-numpy-backward")}
        return scenarios.run(check_id, names, seed, options)

    ref = _cached(("reference", check_id, assignment, seed, tuple(sorted(options.items()))), make)
    if "error" in ref.facts or "missing" in ref.facts:
        raise RuntimeError(f"bnlib's reference fails check {check_id!r}: {ref.facts}")
    return ref


# --------------------------------------------------------------------------------------------
# Comparing records
# --------------------------------------------------------------------------------------------


#: Arrays whose largest entry is below this are compared in absolute terms (all inputs are O(1)).
_FLOOR = 1e-6


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Max-norm relative error, ``max|got - want| / max|want|``; ``inf`` where finiteness differs.

    Below :data:`_FLOOR` the scale is the floor: two answers that are both zero up to rounding
    (a batch of one normalizes to exactly beta = 0, or to 1e-14) agree.
    """
    if got.shape != want.shape or not np.array_equal(np.isfinite(got), np.isfinite(want)):
        return float("inf")
    finite = np.isfinite(want)
    if not finite.any():
        return 0.0 if np.array_equal(got, want, equal_nan=True) else float("inf")
    diff = float(np.max(np.abs(got[finite] - want[finite])))
    scale = max(float(np.max(np.abs(want[finite]))), _FLOOR)
    return diff / scale


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _excerpt(got: np.ndarray, want: np.ndarray) -> str:
    """Where they differ most: ``at [2, 1]: expected 0.83, got 0.82``."""
    g, w = np.atleast_1d(got), np.atleast_1d(want)
    bad = ~np.isclose(g, w, rtol=1e-9, atol=0, equal_nan=True)
    err = np.where(np.isfinite(g) & np.isfinite(w), np.abs(g - w), np.inf)
    err = np.where(bad, err, -1)
    idx = np.unravel_index(int(np.argmax(err)), g.shape)
    where = "" if want.ndim == 0 else f" at {[int(i) for i in idx]}"
    return f"{where}, expected {_fmt(w[idx])}, got {_fmt(g[idx])}"


def _array_problems(sc: Scenario, student: Record, ref: Record, keys: Iterable[str]) -> list[str]:
    problems = []
    types = student.facts.get("types", {})
    for key in keys:
        want = ref.arrays[key]
        how = "- " + ref.facts.get("calls", {}).get(key, key)
        got = student.arrays.get(key)
        if got is None:
            kind = types.get(key)
            problems.append(
                f"{how}: expected an array of shape {want.shape}, got "
                + (f"a {kind}." if kind else "nothing.")
            )
            continue
        if got.shape != want.shape:
            problems.append(f"{how}: expected shape {want.shape}, got shape {got.shape}.")
            continue
        err = _relative_error(got, want)
        if err > sc.rtol:
            size = "" if not np.isfinite(err) else f" (largest difference {err:.2g} of the largest value)"
            problems.append(f"{how}: wrong{_excerpt(got, want)}{size}.")
    return problems


def _compare(sc: Scenario, student: Record, ref: Record) -> tuple[list[str], str]:
    """The problems with a student's record (empty: passed), and a note on diagnostic arrays."""
    facts = student.facts
    if "error" in facts:
        err = facts["error"]
        if err.get("type") == "NotImplementedError":
            return [f"- {err['call']} raised NotImplementedError: it is not implemented yet."], ""
        if sc.check_id == "module_device" and _meta_cannot_tell(err):
            return [], ""
        return [f"- {err['call']} raised {err['type']}: {err['message']}"], ""
    keys = [k for k in ref.arrays if not k.startswith("diag_")]
    problems = _array_problems(sc, student, ref, keys)
    if sc.pure and facts.get("modified"):
        problems.append(
            "- Your code changed its arguments in place ("
            + "; ".join(facts["modified"][:2])
            + "): leave them as they were and return new arrays."
        )
    for a, b in sc.same_arrays:
        x, y = student.arrays.get(a), student.arrays.get(b)
        if x is None or y is None or x.shape != y.shape or _relative_error(x, y) > 1e-9:
            how = student.facts.get("calls", {})
            problems.append(f"- {how.get(a, a)} and {how.get(b, b)} differ: the same cache must give the same result.")
    for key in sc.compare_facts:
        if facts.get(key) != ref.facts.get(key):
            problems.append(f"- {key}: expected {_show(ref.facts.get(key))}, got {_show(facts.get(key))}.")
    diag = ""
    diag_keys = [k for k in ref.arrays if k.startswith("diag_")]
    if problems and diag_keys and _array_problems(sc, student, ref, diag_keys):
        diag = (
            "Your forward pass is wrong too (its output y differs from the reference): the "
            "gradients are checked against the right forward pass, so fix the forward first."
        )
    return problems, diag


def _meta_cannot_tell(err: Mapping[str, Any]) -> bool:
    """A data-dependent call (``.item()``) that the meta device cannot run: not a device bug."""
    text = str(err.get("message", ""))
    return "meta" in text and ("item()" in text or "data-dependent" in text or "Cannot copy out of meta" in text)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) < 300 else text[:297] + "..."


def _same(sc: Scenario, a: Record, b: Record) -> bool:
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
        if got is None or got.shape != want.shape or _relative_error(got, want) > tol:
            return False
    if sc.pure and bool(a.facts.get("modified")) != bool(b.facts.get("modified")):
        return False
    return all(a.facts.get(k) == b.facts.get(k) for k in sc.compare_facts)


def _inconsistencies(sc: Scenario, r: Record) -> frozenset:
    """The kinds of ``same_arrays`` pairs that disagree: ``{("first", "later"), ...}``."""
    kinds = set()
    for a, b in sc.same_arrays:
        x, y = r.arrays.get(a), r.arrays.get(b)
        if x is None or y is None or x.shape != y.shape or _relative_error(x, y) > 1e-9:
            kinds.add((a.rsplit("_", 1)[-1], b.rsplit("_", 1)[-1]))
    return frozenset(kinds)


def _name_mistake(sc, record, ref, assignment, seed, options):
    from autograder.course.mistakes import for_assignment

    for mistake in for_assignment(assignment, sc.targets):

        def make(mistake=mistake) -> Record | None:
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    return scenarios.run(sc.check_id, mistake.implementation(assignment), seed, options)
            except Exception:
                return None

        key = ("mistake", mistake.name, sc.check_id, assignment, seed, tuple(sorted(options.items())))
        rec = _cached(key, make)
        if rec is None:
            continue
        problems, _ = _compare(sc, rec, ref)
        if problems and _same(sc, record, rec):
            return mistake
    return None


# --------------------------------------------------------------------------------------------
# Delegation
# --------------------------------------------------------------------------------------------


_AUTOGRAD = ("torch.autograd.grad", "torch.autograd.backward", "torch.autograd.functional", "torch.func", "functorch", "torch.enable_grad", "torch.set_grad_enabled")


def _kernel_forbidden(dotted: str, family: str) -> bool:
    top = dotted.split(".")[0]
    if top == "bnlib":
        return True
    if family == "numpy":
        return top in scenarios.FOREIGN_MODULES
    low = dotted.lower()
    return top == "torch" and any(k in low for k in NORM_KERNELS)


def _autograd_forbidden(dotted: str) -> bool:
    return any(dotted == p or dotted.startswith(p + ".") for p in _AUTOGRAD)


class _Analysis:
    """Which top-level functions and classes use a forbidden library, following helpers.

    ``kernel[name]``: the forbidden things ``name`` uses (bnlib, torch BN kernels, torch in
    NumPy assignments). ``autograd[name]``: autograd calls inside ``name`` (checked only for
    ``BatchNormFunction``'s backward).
    """

    #: What the notebooks' locked set-up cells import (they are not part of the student's source).
    SETUP_ALIASES = {"np": "numpy", "numpy": "numpy", "torch": "torch", "nn": "torch.nn"}

    def __init__(self, source: str, family: str):
        self.family = family
        self.aliases: dict[str, str] = dict(self.SETUP_ALIASES)
        self.defs: dict[str, list[ast.AST]] = {}
        self.kernel: dict[str, set[str]] = {}
        self.autograd: dict[str, set[str]] = {}
        for chunk in source.split(CELL_SEPARATOR):
            tree = _parse(chunk)
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

    def _scan(self, name: str, nodes: list[ast.AST]) -> tuple[set[str], set[str], set[str]]:
        kernel, autograd, calls = set(), set(), set()
        local = dict(self.aliases)
        for top in nodes:
            for node in ast.walk(top):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    local.update(_import_aliases(node))
        for top in nodes:
            for node in ast.walk(top):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for dotted in _import_aliases(node).values():
                        if _kernel_forbidden(dotted, self.family):
                            kernel.add(f"import {dotted}")
                elif isinstance(node, (ast.Name, ast.Attribute, ast.Call)):
                    dotted = self._resolve(node, local)
                    if dotted:
                        if _kernel_forbidden(dotted, self.family):
                            kernel.add(dotted)
                        if _autograd_forbidden(dotted):
                            autograd.add(dotted)
                    if isinstance(node, ast.Name) and node.id in self.defs and node.id != name:
                        calls.add(node.id)
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                        if node.func.attr == "backward" and not _is_super_call(node.func.value):
                            autograd.add(f"{ast.unparse(node.func)}()")
        # an attribute chain resolves at every prefix: keep the longest names only
        kernel = {k for k in kernel if not any(o != k and o.startswith(k + ".") for o in kernel)}
        autograd = {k for k in autograd if not any(o != k and o.startswith(k + ".") for o in autograd)}
        return kernel, autograd, calls

    def _propagate(self) -> None:
        uses = {}
        for name, nodes in self.defs.items():
            kernel, autograd, calls = self._scan(name, nodes)
            uses[name] = calls
            self.kernel[name] = kernel
            self.autograd[name] = autograd
        for name, dotted in self.aliases.items():  # bn_forward_train = bnlib.numpy.forward_train
            if self.SETUP_ALIASES.get(name) != dotted and _kernel_forbidden(dotted, self.family):
                self.kernel.setdefault(name, set()).add(dotted)
        changed = True
        while changed:
            changed = False
            for name, calls in uses.items():
                for callee in calls:
                    extra = {f"{x} (through {callee})" if "(through" not in x else x for x in self.kernel.get(callee, ())}
                    if not extra <= self.kernel[name]:
                        self.kernel[name] |= extra
                        changed = True


def _is_super_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    try:  # IPython syntax (%magics, !shell): let IPython turn it into Python first
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))
    except Exception:
        return None


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


def delegation(sc: Scenario, record: Record, source: str) -> str:
    """Why this check's functions count as delegating (empty string if they do not)."""
    reasons: list[str] = []
    family = sc.family
    backward_check = sc.check_id.startswith("function_backward") or sc.check_id == "module_backward"
    if source:
        analysis = _Analysis(source, family)
        for target in sc.targets:
            used = sorted(analysis.kernel.get(target, ()))
            if used:
                reasons.append(f"`{target}` uses {', '.join(used[:3])}.")
            if family == "torch" and backward_check and target == "BatchNormFunction":
                auto = sorted(analysis.autograd.get(target, ()))
                if auto:
                    reasons.append(f"`BatchNormFunction` calls {', '.join(auto[:3])}: autograd computes the gradient, not your backward.")
    for entry in record.facts.get("foreign", []) or []:
        entry = str(entry)
        if entry.startswith("aten:"):
            reasons.append(f"PyTorch's own kernel {entry[5:]} ran during this check.")
        elif entry.startswith("bnlib"):
            reasons.append(f"bnlib's {entry} ran during this check.")
        elif family == "numpy":
            reasons.append(f"{entry} ran during this check: this assignment is NumPy only.")
        elif backward_check:
            reasons.append(f"{entry} ran inside your BatchNormFunction.backward: autograd computes the gradient, not your code.")
    for name, origin in (record.facts.get("globals", {}) or {}).items():
        reasons.append(f"your code uses `{name}`, which is {origin}.")
    seen, unique = set(), []
    for r in reasons:
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return " ".join(unique[:4])
