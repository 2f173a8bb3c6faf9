r"""The scenarios behind the hidden tests: what each graded check does with a student's code.

A *scenario* calls the student's functions (looked up by name in the notebook's namespace) on
challenge inputs drawn from a seed, and keeps what came back as a :class:`Record`: named float64
arrays, plus small JSON *facts* (an exception the student's code raised, the keys of a
state_dict, the devices of the outputs, which foreign functions ran during the student's
calls...). A scenario never judges: :mod:`autograder.judging.judge` replays the same scenario, with the
same seed, on bnlib's reference and on each known wrong variant, and compares.

This module runs INSIDE the grading sandbox, in the student's process: it imports only NumPy and
the standard library (torch only inside the ``bn-torch`` scenarios, never bnlib).

Stable API (used by :mod:`autograder.inside.probe`, :mod:`autograder.judging.judge` and the autograder):

``SCENARIOS: dict[str, Scenario]``
    every check, by id. The id is the nbgrader ``grade_id`` of the hidden test cell.
``run(check_id, namespace, seed, options=None) -> Record``
    run one check on the functions in ``namespace`` (a notebook's ``globals()``); never raises
    because of the student's code.
``Record(arrays, facts)``, ``Record.save(directory, check_id)``, ``Record.load(directory, check_id)``
    ``<check_id>.npz`` (loaded with ``allow_pickle=False``) and ``<check_id>.json``.

Facts every record may carry (scenario-specific ones are documented with each scenario):

- ``error``: ``{"call", "type", "message"}``: the student's code raised (the scenario stops there);
- ``missing``: a name the check needs that the notebook does not define;
- ``calls``: ``{array_key: "how it was computed"}``, for the feedback;
- ``types``: ``{array_key: type name}`` for results that were not arrays (or tensors);
- ``modified``: arguments the student's code changed in place;
- ``foreign``: functions from outside the allowed libraries that ran during the student's calls
  (bnlib, torch in NumPy assignments, batch-norm kernels or autograd in ``bn-torch``);
- ``globals``: global names the student's functions use that are bound to such modules.

Inputs are chosen to tell right from wrong: batch sizes ``N >= 4`` and ``N != D`` (with ``N = 2``
every correct batch norm has ``dx = 0``; with ``N = D`` a sum over the wrong axis has the right
shape), a random upstream gradient ``dy``, non-trivial ``gamma``, ``beta`` and running statistics,
and, where ε is under test, variances small enough for ε's placement to matter.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Record", "Scenario", "SCENARIOS", "run", "StudentCodeFailed", "FOREIGN_MODULES", "NORM_KERNELS"]

#: Top-level modules whose functions running inside a NumPy assignment mean delegation.
FOREIGN_MODULES = ("bnlib", "torch", "jax", "tensorflow", "autograd", "keras")
#: Names of PyTorch's normalization kernels: any of them in ``bn-torch`` means delegation
#: (layer norm on a transposed input computes batch norm, too).
NORM_KERNELS = ("batch_norm", "batchnorm", "layer_norm", "layernorm", "instance_norm", "instancenorm", "group_norm", "groupnorm")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    """What one check saw: named arrays (float64, int64 or bool) and JSON-able facts."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike, check_id: str) -> None:
        """Write ``<check_id>.npz`` and ``<check_id>.json`` into ``directory`` (atomically)."""
        directory = Path(directory)
        tmp = directory / f".{check_id}.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **self.arrays)
        os.replace(tmp, directory / f"{check_id}.npz")
        tmp = directory / f".{check_id}.json.tmp"
        tmp.write_text(json.dumps(self.facts, default=str))
        os.replace(tmp, directory / f"{check_id}.json")

    @classmethod
    def load(cls, directory: str | os.PathLike, check_id: str) -> Record | None:
        """Read a saved record back, or ``None`` if the check never wrote one (or wrote garbage)."""
        directory = Path(directory)
        try:
            facts = json.loads((directory / f"{check_id}.json").read_text())
            with np.load(directory / f"{check_id}.npz", allow_pickle=False) as data:
                arrays = {k: np.array(data[k]) for k in data.files}
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not isinstance(facts, dict):
            return None
        arrays = {k: v for k, v in arrays.items() if v.dtype.kind in "fiub"}
        return cls(arrays, facts)


class StudentCodeFailed(Exception):
    """The student's code raised while a scenario called it; ends the scenario."""

    def __init__(self, call: str, exc: BaseException | str):
        self.call = call
        self.exc = exc
        super().__init__(call)


class _Missing(Exception):
    pass


def _short(text: str, limit: int = 400) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Watching the student's calls: foreign functions, batch-norm kernels, autograd in backward
# --------------------------------------------------------------------------------------------


class _Watch:
    """A ``sys.setprofile`` hook that notes functions from foreign modules called by student code.

    ``modules``: top-level module names that count as foreign. ``only_inside``: code objects;
    when given, calls count only while one of them is running (the student's backward).
    ``names``: when given, only functions with these names count (e.g. autograd's ``grad``).
    """

    def __init__(self, found: set, modules: tuple[str, ...], only_inside=(), names=None):
        self.found, self.modules, self.names = found, modules, names
        self.only_inside = set(only_inside)
        self.depth = 0
        self.previous = None

    def _note(self, module: str, name: str) -> None:
        if module.split(".")[0] in self.modules and (self.names is None or name in self.names):
            if not self.only_inside or self.depth > 0:
                self.found.add(f"{module}.{name}")

    def hook(self, frame, event, arg):
        if event == "call":
            if frame.f_code in self.only_inside:
                self.depth += 1
            self._note(str(frame.f_globals.get("__name__", "")), frame.f_code.co_name)
        elif event == "return":
            if frame.f_code in self.only_inside:
                self.depth -= 1
        elif event == "c_call":
            module = getattr(arg, "__module__", None)
            if not module:
                owner = getattr(arg, "__self__", None)
                module = type(owner).__module__ if owner is not None else ""
            self._note(str(module), str(getattr(arg, "__name__", "?")))

    def __enter__(self):
        self.previous = sys.getprofile()
        sys.setprofile(self.hook)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self.previous)
        return False


def _batch_norm_op_recorder(found: set):
    """A TorchDispatchMode that notes every aten batch-norm kernel that runs (torch scenarios)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class BatchNormOps(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            # nothing is compiled in here; saying so spares importing torch._dynamo (1-2 s)
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if any(k in name for k in NORM_KERNELS):
                found.add(f"aten:{name}")
            return func(*args, **(kwargs or {}))

    return BatchNormOps()


# --------------------------------------------------------------------------------------------
# A trial: one run of one scenario on one namespace
# --------------------------------------------------------------------------------------------


class Trial:
    """Calls the student's code for a scenario and collects what comes back.

    ``family`` is ``"numpy"`` or ``"torch"``: which delegation watch applies.
    """

    def __init__(self, namespace: Mapping[str, Any], family: str, options: Mapping[str, Any]):
        self.ns = namespace
        self.family = family
        self.options = dict(options)
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
            raise _Missing(name) from None
        self._note_globals(name, obj)
        return obj

    def _note_globals(self, name: str, obj: Any) -> None:
        """Record the foreign modules the student's function (or class) reaches through globals."""
        seen: dict[str, str] = self.record.facts.setdefault("globals", {})
        for gname, origin in _foreign_globals(obj, self.family):
            seen[gname] = origin

    # -- calling -------------------------------------------------------------------------------

    def watch_backward_of(self, cls: Any) -> None:
        """Count autograd calls made while ``cls.backward`` (the student's) runs."""
        code = getattr(getattr(cls, "backward", None), "__code__", None)
        self._backward_code = (code,) if code is not None else ()

    def call(self, label: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, with delegation watched and in-place changes of arrays noted.

        ``label`` says, in the feedback, what was called (``"bn_forward_train(x, gamma, beta,
        eps=1e-05) with x of shape (8, 5)"``). A failure ends the scenario with an ``error`` fact.
        """
        # ndarray methods (C code) only: a notebook can patch np.array_equal, not these
        before = [(i, a.shape, a.tobytes()) for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        try:
            with self._watching():
                result = fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:  # the student's code, whatever it raises
            raise StudentCodeFailed(label, exc) from None
        for i, shape, old in before:
            new = args[i]
            if new.shape != shape or new.tobytes() != old:
                self.record.facts.setdefault("modified", []).append(f"argument {i + 1} of {label}")
        return result

    def _watching(self):
        if self.family == "numpy":
            return _Watch(self._foreign, FOREIGN_MODULES)
        return _TorchWatch(self)

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
        arr = _to_numpy(value)
        if arr is None:
            self.record.facts.setdefault("types", {})[key] = _type_name(value)
            return
        if self.family == "numpy" and not isinstance(value, np.ndarray) and np.ndim(value) > 0:
            self.record.facts.setdefault("types", {})[key] = _type_name(value)
        self.record.arrays[key] = arr

    def fact(self, key: str, value: Any) -> None:
        self.record.facts[key] = value

    def finish(self) -> Record:
        if self._foreign:
            self.record.facts["foreign"] = sorted(self._foreign)
        if not self.record.facts.get("globals"):
            self.record.facts.pop("globals", None)
        return self.record


class _TorchWatch:
    """Batch-norm kernels (dispatch mode), bnlib, and autograd inside the student's backward."""

    def __init__(self, trial: Trial):
        self.trial = trial
        self.mode = _batch_norm_op_recorder(trial._foreign)
        self.bnlib = _Watch(trial._foreign, ("bnlib",))
        self.autograd = None
        self.previous = None

    def hook(self, frame, event, arg):
        self.bnlib.hook(frame, event, arg)
        if self.autograd is not None:
            self.autograd.hook(frame, event, arg)

    def __enter__(self):
        if self.trial._backward_code:
            self.autograd = _Watch(
                self.trial._foreign,
                ("torch",),
                only_inside=self.trial._backward_code,
                names={"grad", "backward", "vjp", "jacrev", "vjp_fn"},
            )
        self.previous = sys.getprofile()
        sys.setprofile(self.hook)
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self.mode.__exit__(*exc)
        finally:
            sys.setprofile(self.previous)
        return False


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _to_numpy(value: Any) -> np.ndarray | None:
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


def _foreign_globals(obj: Any, family: str, limit: int = 200) -> list[tuple[str, str]]:
    """Global names that the student's function or class uses, bound to foreign modules.

    Walks the code objects (methods, nested functions, helpers defined in the notebook) and
    resolves each global name; reports the ones whose value comes from bnlib (any assignment),
    from torch/jax/tensorflow (NumPy assignments), or from torch's batch-norm (``bn-torch``).
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
                origin = _origin(base)
                if origin and _forbidden(origin, family):
                    found.append((f"{o.__name__} base", origin))
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
            origin = _origin(value)
            if origin and _forbidden(origin, family):
                found.append((name, origin))
            elif callable(value) and getattr(value, "__module__", None) == home:
                add(value)
        for dotted, origin in _attribute_chains(code, glb):  # F.batch_norm, torch.nn.BatchNorm1d
            if _forbidden(origin, family):
                found.append((dotted, origin))
    return found


def _attribute_chains(code: Any, glb: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(dotted name, origin)`` for each ``module.attr[.attr]`` the bytecode loads from a global module."""
    import dis

    out = []
    chain: list[str] = []
    value: Any = None

    def flush() -> None:
        if len(chain) > 1:
            origin = _origin(value)
            if origin:
                out.append((".".join(chain), origin))

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


def _origin(value: Any) -> str | None:
    """Dotted origin of a module, function or class (``"bnlib.numpy"``, ``"torch.nn.functional.batch_norm"``)."""
    if type(value).__name__ == "module":
        return getattr(value, "__name__", None)
    module = getattr(value, "__module__", None)
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if isinstance(module, str) and isinstance(name, str) and module != "__main__":
        return f"{module}.{name}"
    return None


def _forbidden(origin: str, family: str) -> bool:
    top = origin.split(".")[0]
    if top == "bnlib" and not origin.startswith("bnlib.gradcheck"):
        return True
    if family == "numpy":
        return top in FOREIGN_MODULES
    low = origin.lower()
    return top == "torch" and any(k in low for k in NORM_KERNELS)


# --------------------------------------------------------------------------------------------
# Challenge inputs
# --------------------------------------------------------------------------------------------


def _rng(seed: int, check_id: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(check_id.encode())])


def _batch(rng: np.random.Generator, n: int, d: int, sd=(0.5, 2.0), centre: float = 2.0) -> np.ndarray:
    """``(n, d)`` float64: each feature with its own mean in ``±centre`` and std in ``sd``."""
    mu = rng.uniform(-centre, centre, d)
    std = rng.uniform(*sd, d)
    return mu + std * rng.standard_normal((n, d))


def _affine(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-trivial ``gamma`` (either sign, away from 1) and ``beta``."""
    gamma = rng.uniform(0.5, 2.5, d) * rng.choice([-1.0, 1.0], d)
    beta = rng.normal(0.0, 1.5, d)
    return gamma, beta


def _running(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Running statistics far from the initial 0 and 1."""
    return rng.uniform(-2.0, 2.0, d), rng.uniform(0.3, 3.0, d)


# --------------------------------------------------------------------------------------------
# Scenario registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One graded behaviour.

    Attributes:
        check_id: the hidden test cell's ``grade_id``.
        family: ``"numpy"`` or ``"torch"`` (which delegation rules apply).
        targets: the student's names this check exercises (for delegation and mistakes).
        behaviour: one line, "what this check wants", used in the feedback.
        rtol: largest relative error (max-norm, per array) that passes.
        compare_facts: facts that must equal the reference's.
        pure: arguments must not be changed in place.
        same_arrays: pairs of the student's own arrays that must agree with each other (the
            reference is not consulted for these).
        body: ``body(trial, rng)``.

    Arrays whose key starts with ``diag_`` are diagnostics: the judge does not grade them (it
    uses them to explain a failure, e.g. a wrong forward pass under a backward check).
    """

    check_id: str
    family: str
    targets: tuple[str, ...]
    behaviour: str
    body: Callable[[Trial, np.random.Generator], None]
    rtol: float = 1e-6
    compare_facts: tuple[str, ...] = ()
    pure: bool = False
    same_arrays: tuple[tuple[str, str], ...] = ()


SCENARIOS: dict[str, Scenario] = {}


def scenario(check_id: str, family: str, targets: tuple[str, ...], behaviour: str, **kw: Any):
    """Register ``body`` as the scenario of ``check_id``."""

    def register(body: Callable[[Trial, np.random.Generator], None]):
        if check_id in SCENARIOS:
            raise ValueError(f"two scenarios for check {check_id!r}")
        SCENARIOS[check_id] = Scenario(check_id, family, tuple(targets), behaviour, body, **kw)
        return body

    return register


def run(
    check_id: str,
    namespace: Mapping[str, Any],
    seed: int,
    options: Mapping[str, Any] | None = None,
) -> Record:
    """Run check ``check_id`` on the functions in ``namespace`` with inputs drawn from ``seed``.

    Never raises because of the student's code: a failure is recorded as the ``error`` fact (a
    missing function as ``missing``). ``options``: ``{"device": "cuda" | "cpu" | "meta"}`` for
    the device check (default: CUDA if present, else the meta device).
    """
    sc = SCENARIOS[check_id]
    trial = Trial(namespace, sc.family, options or {})
    try:
        sc.body(trial, _rng(seed, check_id))
    except _Missing:
        pass
    except StudentCodeFailed as failed:
        exc = failed.exc
        trial.record.facts["error"] = {
            "call": failed.call,
            "type": type(exc).__name__ if isinstance(exc, BaseException) else "Error",
            "message": _short(str(exc)),
        }
    return trial.finish()


# ============================================================================================
# bn-numpy-forward
# ============================================================================================

_TRAIN_SHAPES = ((8, 5), (32, 3), (5, 9))


@scenario(
    "forward_train_output",
    "numpy",
    ("bn_forward_train",),
    "bn_forward_train normalizes each feature with the batch mean and the biased batch variance, "
    "then scales by gamma and shifts by beta",
    rtol=1e-4,  # insensitive to where eps sits: forward_train_eps grades that
    pure=True,
)
def _forward_train_output(t: Trial, rng) -> None:
    f = t.fn("bn_forward_train")
    for n, d in _TRAIN_SHAPES:
        x = _batch(rng, n, d)
        gamma, beta = _affine(rng, d)
        label = f"bn_forward_train(x, gamma, beta, 1e-05) with x of shape {(n, d)}"
        y, _cache = t.unpack(label, t.call(label, f, x, gamma, beta, 1e-5), 2, "(y, cache)")
        t.array(f"y_{n}x{d}", y, f"y from {label}")


@scenario(
    "forward_train_eps",
    "numpy",
    ("bn_forward_train",),
    "bn_forward_train adds eps to the variance inside the square root, sqrt(var + eps), "
    "with the eps it is given (default 1e-5)",
)
def _forward_train_eps(t: Trial, rng) -> None:
    f = t.fn("bn_forward_train")
    n, d = 6, 4
    x = _batch(rng, n, d, sd=(0.005, 0.05))
    x[:, 0] = x[0, 0]  # a constant feature: var = 0, and eps alone keeps x_hat finite
    gamma, beta = _affine(rng, d)
    label = f"bn_forward_train(x, gamma, beta) with the default eps, x of shape {(n, d)} with small variances"
    y, _ = t.unpack(label, t.call(label, f, x, gamma, beta), 2, "(y, cache)")
    t.array("y_default_eps", y, f"y from {label}")
    label = f"bn_forward_train(x, gamma, beta, 0.01) with x of shape {(n, d)} with small variances"
    y, _ = t.unpack(label, t.call(label, f, x, gamma, beta, 0.01), 2, "(y, cache)")
    t.array("y_eps_0.01", y, f"y from {label}")


@scenario(
    "forward_eval_output",
    "numpy",
    ("bn_forward_eval",),
    "bn_forward_eval normalizes with the running mean and running variance it is given, never "
    "with the batch's own statistics (a batch of one works too)",
    rtol=1e-4,
    pure=True,
)
def _forward_eval_output(t: Trial, rng) -> None:
    f = t.fn("bn_forward_eval")
    for n, d in ((8, 5), (1, 6)):
        x = _batch(rng, n, d)
        gamma, beta = _affine(rng, d)
        rm, rv = _running(rng, d)
        label = f"bn_forward_eval(x, gamma, beta, running_mean, running_var, 1e-05) with x of shape {(n, d)}"
        y = t.call(label, f, x, gamma, beta, rm, rv, 1e-5)
        t.array(f"y_{n}x{d}", y, f"the output of {label}")


@scenario(
    "forward_eval_eps",
    "numpy",
    ("bn_forward_eval",),
    "bn_forward_eval adds eps to the running variance inside the square root, sqrt(running_var + eps)",
)
def _forward_eval_eps(t: Trial, rng) -> None:
    f = t.fn("bn_forward_eval")
    n, d = 5, 4
    x = _batch(rng, n, d, sd=(0.005, 0.05))
    gamma, beta = _affine(rng, d)
    rm = x.mean(axis=0) + rng.normal(0, 0.01, d)
    rv = rng.uniform(1e-5, 1e-3, d)
    label = "bn_forward_eval(x, gamma, beta, running_mean, running_var) with the default eps and a small running_var"
    t.array("y_default_eps", t.call(label, f, x, gamma, beta, rm, rv), f"the output of {label}")
    label = "bn_forward_eval(x, gamma, beta, running_mean, running_var, 0.01) with a small running_var"
    t.array("y_eps_0.01", t.call(label, f, x, gamma, beta, rm, rv, 0.01), f"the output of {label}")


def _update(t: Trial, f, rm, rv, x, momentum=None) -> tuple[Any, Any]:
    args = "running_mean, running_var, x" + ("" if momentum is None else f", {momentum}")
    label = f"update_running_stats({args}) with x of shape {x.shape}"
    extra = () if momentum is None else (momentum,)
    out = t.call(label, f, rm.copy(), rv.copy(), x.copy(), *extra)
    new_rm, new_rv = t.unpack(label, out, 2, "(running_mean, running_var)")
    return label, new_rm, new_rv


@scenario(
    "running_mean",
    "numpy",
    ("update_running_stats",),
    "update_running_stats moves the running mean towards the batch mean: "
    "(1 - momentum) * running_mean + momentum * mean",
)
def _running_mean(t: Trial, rng) -> None:
    f = t.fn("update_running_stats")
    for n, d in ((8, 5), (4, 3)):
        x = _batch(rng, n, d)
        rm, rv = _running(rng, d)
        # momentum 0.5 weighs old and new alike: a reversed momentum is graded by running_momentum
        label, new_rm, _ = _update(t, f, rm, rv, x, 0.5)
        t.array(f"running_mean_{n}x{d}", new_rm, f"the running_mean returned by {label}")


@scenario(
    "running_var_unbiased",
    "numpy",
    ("update_running_stats",),
    "update_running_stats folds the UNBIASED batch variance, m/(m-1) times the biased one, "
    "into the running variance",
)
def _running_var(t: Trial, rng) -> None:
    f = t.fn("update_running_stats")
    for n, d in ((4, 3), (10, 5)):
        x = _batch(rng, n, d)
        rm, rv = _running(rng, d)
        label, _, new_rv = _update(t, f, rm, rv, x, 0.5)
        t.array(f"running_var_{n}x{d}", new_rv, f"the running_var returned by {label}")


@scenario(
    "running_momentum",
    "numpy",
    ("update_running_stats",),
    "momentum is the weight of the NEW batch (PyTorch's convention, default 0.1), "
    "for the mean and the variance",
)
def _running_momentum(t: Trial, rng) -> None:
    f = t.fn("update_running_stats")
    n, d = 6, 4
    x = _batch(rng, n, d)
    const = np.repeat(rng.normal(0, 1, (1, d)), n, axis=0)  # var = 0: biased or not, the same
    for momentum in (None, 0.3):
        name = "default" if momentum is None else str(momentum)
        rm, rv = _running(rng, d)
        label, new_rm, _ = _update(t, f, rm, rv, x, momentum)
        t.array(f"running_mean_momentum_{name}", new_rm, f"the running_mean returned by {label}")
        label, _, new_rv = _update(t, f, rm, rv, const, momentum)
        t.array(
            f"running_var_momentum_{name}",
            new_rv,
            f"the running_var returned by {label}, for a batch whose features are constant (variance 0)",
        )


@scenario(
    "running_stats_new_arrays",
    "numpy",
    ("update_running_stats",),
    "update_running_stats returns two new arrays of shape (D,) and leaves running_mean, "
    "running_var and x as they were",
    pure=True,
    compare_facts=("returned_shapes",),
)
def _running_new(t: Trial, rng) -> None:
    f = t.fn("update_running_stats")
    x = _batch(rng, 8, 5)
    rm, rv = _running(rng, 5)
    label, new_rm, new_rv = _update(t, f, rm, rv, x)
    t.fact("returned_shapes", [list(np.shape(new_rm)), list(np.shape(new_rv))])
    t.array("diag_running_mean", new_rm, f"the running_mean returned by {label}")
    t.array("diag_running_var", new_rv, f"the running_var returned by {label}")


# ============================================================================================
# bn-numpy-backward
# ============================================================================================

_BACKWARD_SHAPES = ((8, 5), (6, 3))


def _backward(t: Trial, rng, which: str, keep: str) -> None:
    fwd = t.fn("bn_forward_train")
    bwd = t.fn(f"bn_backward_{which}")
    for n, d in _BACKWARD_SHAPES:
        x = _batch(rng, n, d)
        gamma, beta = _affine(rng, d)
        dy = rng.normal(0, 1, (n, d))
        label = f"bn_forward_train(x, gamma, beta, 1e-05) with x of shape {(n, d)}"
        y, cache = t.unpack(label, t.call(label, fwd, x, gamma, beta, 1e-5), 2, "(y, cache)")
        t.array(f"diag_y_{n}x{d}", y, f"y from {label}")
        blabel = f"bn_backward_{which}(dy, cache) for that cache and a random dy"
        dx, dgamma, dbeta = t.unpack(blabel, t.call(blabel, bwd, dy, cache), 3, "(dx, dgamma, dbeta)")
        grads = {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}
        t.array(f"{keep}_{n}x{d}", grads[keep], f"{keep} from {blabel}, x of shape {(n, d)}")


for _which in ("staged", "compact"):
    for _keep, _what in (
        ("dx", "dx, the gradient of the input, along all three paths (direct, through the mean, through the variance)"),
        ("dgamma", "dgamma = sum over the batch of dy * x_hat, one value per feature"),
        ("dbeta", "dbeta = sum over the batch of dy, one value per feature"),
    ):
        scenario(
            f"backward_{_which}_{_keep}",
            "numpy",
            ("bn_forward_train", f"bn_backward_{_which}"),
            f"bn_backward_{_which} returns {_what}",
            rtol=1e-4,  # eps's placement is graded by the forward checks
        )(lambda t, rng, _w=_which, _k=_keep: _backward(t, rng, _w, _k))


@scenario(
    "backward_uses_cache",
    "numpy",
    ("bn_forward_train", "bn_backward_compact", "bn_backward_staged"),
    "the backward passes take everything from the cache they are given (not from the last "
    "forward call) and leave it unchanged: the same cache gives the same gradients, whenever "
    "and however often it is used",
    same_arrays=tuple(
        (f"diag_{w}_{g}_{a}", f"diag_{w}_{g}_{b}")
        for w in ("compact", "staged")
        for g in ("dx", "dgamma")
        for a, b in (("first", "later"), ("later", "again"))
    ),
)
def _backward_uses_cache(t: Trial, rng) -> None:
    fwd = t.fn("bn_forward_train")
    for which in ("compact", "staged"):
        bwd = t.fn(f"bn_backward_{which}")
        n, d = 7, 4
        x1, x2 = _batch(rng, n, d), _batch(rng, n, d)
        gamma, beta = _affine(rng, d)
        dy = rng.normal(0, 1, (n, d))
        l1 = "bn_forward_train(x1, gamma, beta, 1e-05)"
        _, cache1 = t.unpack(l1, t.call(l1, fwd, x1, gamma, beta, 1e-5), 2, "(y, cache)")
        calls = (
            ("first", f"bn_backward_{which}(dy, cache1) right after the forward pass of x1"),
            ("later", f"bn_backward_{which}(dy, cache1) after a forward pass of another batch x2"),
            ("again", f"bn_backward_{which}(dy, cache1) once more"),
        )
        for when, label in calls:
            if when == "later":
                l2 = "bn_forward_train(x2, gamma, beta, 1e-05), another batch"
                t.unpack(l2, t.call(l2, fwd, x2, gamma, beta, 1e-5), 2, "(y, cache)")
            dx, dgamma, _ = t.unpack(label, t.call(label, bwd, dy, cache1), 3, "(dx, dgamma, dbeta)")
            t.array(f"diag_{which}_dx_{when}", dx, f"dx from {label}")
            t.array(f"diag_{which}_dgamma_{when}", dgamma, f"dgamma from {label}")


# ============================================================================================
# bn-torch
# ============================================================================================


def _torch():
    import torch

    return torch


def _t(a: np.ndarray, requires_grad: bool = False, device: str = "cpu"):
    torch = _torch()
    return torch.tensor(a, dtype=torch.float64, device=device, requires_grad=requires_grad)


@scenario(
    "function_forward",
    "torch",
    ("BatchNormFunction",),
    "BatchNormFunction.apply(x, gamma, beta, eps) returns gamma * x_hat + beta with the batch "
    "mean and the biased batch variance, eps inside the square root",
)
def _function_forward(t: Trial, rng) -> None:
    F = t.fn("BatchNormFunction")
    for n, d, eps, sd in ((8, 5, 1e-5, (0.5, 2.0)), (6, 4, 0.01, (0.01, 0.1))):
        x = _batch(rng, n, d, sd=sd)
        gamma, beta = _affine(rng, d)
        label = f"BatchNormFunction.apply(x, gamma, beta, {eps}) with float64 x of shape {(n, d)}"
        y = t.call(label, F.apply, _t(x, True), _t(gamma, True), _t(beta, True), eps)
        t.array(f"y_{n}x{d}", y, f"the output of {label}")


def _function_backward(t: Trial, rng, keep: str) -> None:
    torch = _torch()
    F = t.fn("BatchNormFunction")
    t.watch_backward_of(F)
    for n, d in ((8, 5), (6, 3)):
        x = _batch(rng, n, d)
        gamma, beta = _affine(rng, d)
        dy = rng.normal(0, 1, (n, d))
        xt, gt, bt = _t(x, True), _t(gamma, True), _t(beta, True)
        label = f"BatchNormFunction.apply(x, gamma, beta, 1e-05) with float64 x of shape {(n, d)}"
        y = t.call(label, F.apply, xt, gt, bt, 1e-5)
        t.array(f"diag_y_{n}x{d}", y, f"the output of {label}")
        blabel = "torch.autograd.grad(y, (x, gamma, beta), dy), which calls your BatchNormFunction.backward"
        grads = t.call(blabel, torch.autograd.grad, y, (xt, gt, bt), _t(dy), allow_unused=True)
        t.array(f"{keep}_{n}x{d}", grads[("dx", "dgamma", "dbeta").index(keep)], f"{keep} from {blabel}, x of shape {(n, d)}")


for _keep in ("dx", "dgamma", "dbeta"):
    scenario(
        f"function_backward_{_keep}",
        "torch",
        ("BatchNormFunction",),
        f"BatchNormFunction.backward returns the right {_keep}, computed by hand (not by autograd)",
        rtol=1e-4,  # eps's placement is graded by function_forward
    )(lambda t, rng, _k=_keep: _function_backward(t, rng, _k))


# Module checks compare outputs with rtol 1e-4: eps's placement is graded by function_forward.
# Running statistics use momentum 0.5 where the check is about something else than momentum
# (a reversed momentum changes nothing at 0.5), so one mistake costs the points of its behaviour.


def _module(t: Trial, label: str, *args: Any, **kwargs: Any):
    """Build the student's BatchNorm1d in float64 and training mode."""
    M = t.fn("BatchNorm1d")
    m = t.call(label, M, *args, **kwargs)
    m = t.call(f"{label}.double()", lambda: m.double())
    t.call(f"{label}.train()", lambda: m.train())
    return m


def _forward(t: Trial, m, x, what: str):
    return t.call(f"{what} with x of shape {tuple(x.shape)}", m, x)


def _buffer(t: Trial, m, name: str, key: str, how: str) -> None:
    value = getattr(m, name, "<missing>")
    if isinstance(value, str):
        raise StudentCodeFailed(how, AttributeError(f"the module has no attribute {name!r}"))
    t.array(key, value, how)


def _set_buffers(t: Trial, rng, m, c: int) -> None:
    """Give the running statistics known values (as load_state_dict would), by attribute."""
    torch = _torch()
    rm, rv = _running(rng, c)

    def assign():
        with torch.no_grad():
            m.running_mean.copy_(torch.tensor(rm))
            m.running_var.copy_(torch.tensor(rv))
            m.num_batches_tracked.fill_(3)

    t.call("setting module.running_mean, running_var and num_batches_tracked", assign)


def _ncl(rng, n: int, c: int, length: int) -> np.ndarray:
    """``(N, C, L)`` float64 with per-channel statistics."""
    return np.ascontiguousarray(_batch(rng, n * length, c).reshape(n, length, c).transpose(0, 2, 1))


@scenario(
    "module_train_output",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "BatchNorm1d in training mode normalizes (N, C) input with the batch's statistics, as nn.BatchNorm1d",
    rtol=1e-4,
)
def _module_train_output(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5)", 5)
    for k in (1, 2):
        x = _batch(rng, 16, 5)
        y = _forward(t, m, _t(x), f"module(x) in training mode, batch {k}")
        t.array(f"y_batch{k}", y, f"module(x) in training mode, batch {k}, x of shape (16, 5)")


@scenario(
    "module_ncl",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "(N, C, L) input: statistics per channel C over both N and L (m = N*L values each), for the "
    "output and for the running statistics",
    rtol=1e-4,
)
def _module_ncl(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(4, momentum=0.5)", 4, momentum=0.5)
    x = _ncl(rng, 6, 4, 7)
    y = _forward(t, m, _t(x), "module(x) in training mode")
    t.array("y", y, "module(x) in training mode, x of shape (6, 4, 7)")
    _buffer(t, m, "running_mean", "running_mean", "running_mean after that (N, C, L) batch (momentum 0.5)")
    _buffer(t, m, "running_var", "running_var", "running_var after that (N, C, L) batch (momentum 0.5)")


def _three_batches(t: Trial, rng, m, n: int = 8, c: int = 5) -> None:
    for k in range(3):
        x = _batch(rng, n, c)
        _forward(t, m, _t(x), f"module(x) in training mode, batch {k + 1}")


@scenario(
    "module_running_mean",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "the running mean after three training batches moves towards each batch's mean",
    rtol=1e-4,
)
def _module_running_mean(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5, momentum=0.5)", 5, momentum=0.5)
    _three_batches(t, rng, m)
    _buffer(t, m, "running_mean", "running_mean", "module.running_mean after three training batches (momentum 0.5)")


@scenario(
    "module_running_var",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "the running variance after three training batches moves towards each batch's UNBIASED variance",
    rtol=1e-4,
)
def _module_running_var(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5, momentum=0.5)", 5, momentum=0.5)
    _three_batches(t, rng, m, n=4)
    _buffer(t, m, "running_var", "running_var", "module.running_var after three training batches of 4 examples (momentum 0.5)")


@scenario(
    "module_momentum",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "momentum is the weight of the NEW batch: running = (1 - momentum) * running + momentum * batch "
    "(default 0.1)",
    rtol=1e-4,
)
def _module_momentum(t: Trial, rng) -> None:
    x = _batch(rng, 8, 5)
    const = np.repeat(rng.normal(0, 1, (1, 5)), 8, axis=0)  # variance 0: biased or not, the same
    for label, kwargs, key in (
        ("BatchNorm1d(5, momentum=0.3)", {"momentum": 0.3}, "0.3"),
        ("BatchNorm1d(5)", {}, "default"),
    ):
        m = _module(t, label, 5, **kwargs)
        _forward(t, m, _t(x), "module(x) in training mode")
        _buffer(t, m, "running_mean", f"running_mean_{key}", f"running_mean after one batch of {label}")
        m = _module(t, label, 5, **kwargs)
        _forward(t, m, _t(const), "module(x) in training mode, constant features (variance 0)")
        _buffer(t, m, "running_var", f"running_var_{key}", f"running_var after one batch of constant features, {label}")


@scenario(
    "module_cumulative_average",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "momentum=None keeps the plain average of all batches so far (momentum 1/num_batches_tracked)",
    rtol=1e-4,
)
def _module_cumulative(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5, momentum=None)", 5, momentum=None)
    _three_batches(t, rng, m)
    _buffer(t, m, "running_mean", "running_mean", "running_mean after three batches, momentum=None")
    m = _module(t, "BatchNorm1d(5, momentum=None)", 5, momentum=None)
    for k in range(3):
        const = np.repeat(rng.normal(0, 1, (1, 5)), 6, axis=0)
        _forward(t, m, _t(const), f"module(x) in training mode, constant batch {k + 1}")
    _buffer(t, m, "running_var", "running_var", "running_var after three constant batches (variance 0), momentum=None")


@scenario(
    "module_num_batches_tracked",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "num_batches_tracked counts the training batches (and only them)",
)
def _module_nbt(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5)", 5)
    _three_batches(t, rng, m)
    t.call("module.eval()", lambda: m.eval())
    _forward(t, m, _t(_batch(rng, 4, 5)), "module(x) in evaluation mode")
    _buffer(t, m, "num_batches_tracked", "num_batches_tracked", "num_batches_tracked after three training batches and one evaluation batch")


@scenario(
    "module_eval_output",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "in evaluation mode BatchNorm1d normalizes with the running statistics (a batch of one works)",
    rtol=1e-4,
)
def _module_eval_output(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5)", 5)
    _set_buffers(t, rng, m, 5)
    t.call("module.eval()", lambda: m.eval())
    for n in (6, 1):
        x = _batch(rng, n, 5)
        y = _forward(t, m, _t(x), "module(x) in evaluation mode")
        t.array(f"y_{n}", y, f"module(x) in evaluation mode, x of shape ({n}, 5), known running statistics")


@scenario(
    "module_eval_keeps_stats",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "evaluation mode leaves running_mean, running_var and num_batches_tracked unchanged",
)
def _module_eval_keeps(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5)", 5)
    _set_buffers(t, rng, m, 5)
    t.call("module.eval()", lambda: m.eval())
    for k in range(2):
        _forward(t, m, _t(_batch(rng, 6, 5)), f"module(x) in evaluation mode, batch {k + 1}")
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        _buffer(t, m, name, name, f"module.{name} after two evaluation batches")


@scenario(
    "module_options",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "affine=False: no weight and bias (gamma 1, beta 0); track_running_stats=False: no running "
    "buffers, and the batch's statistics in evaluation mode too",
    rtol=1e-4,
    compare_facts=("affine_false_parameters", "untracked_buffers"),
)
def _module_options(t: Trial, rng) -> None:
    m = _module(t, "BatchNorm1d(5, affine=False)", 5, affine=False)
    t.fact("affine_false_parameters", len(list(m.parameters())))
    x = _batch(rng, 8, 5)
    y = _forward(t, m, _t(x), "module(x), affine=False")
    t.array("y_affine_false", y, "module(x) in training mode, affine=False")
    m = _module(t, "BatchNorm1d(5, track_running_stats=False)", 5, track_running_stats=False)
    t.fact(
        "untracked_buffers",
        sorted(k for k in ("running_mean", "running_var", "num_batches_tracked") if getattr(m, k, None) is not None),
    )
    _forward(t, m, _t(_batch(rng, 8, 5)), "module(x) in training mode, track_running_stats=False")
    t.call("module.eval()", lambda: m.eval())
    x = _batch(rng, 8, 5)
    y = _forward(t, m, _t(x), "module(x) in evaluation mode, track_running_stats=False")
    t.array("y_untracked_eval", y, "module(x) in evaluation mode, track_running_stats=False")


@scenario(
    "module_state_dict",
    "torch",
    ("BatchNorm1d",),
    "BatchNorm1d has nn.BatchNorm1d's parameters, buffers and state_dict (keys, shapes, dtypes), "
    "and state dicts load both ways",
    compare_facts=("state_dict", "torch_loads_ours"),
)
def _module_state_dict(t: Trial, rng) -> None:
    torch = _torch()
    M = t.fn("BatchNorm1d")
    m = t.call("BatchNorm1d(5)", M, 5)
    sd = t.call("BatchNorm1d(5).state_dict()", lambda: m.state_dict())
    t.fact("state_dict", [[str(k), list(getattr(v, "shape", [])), str(getattr(v, "dtype", type(v).__name__)).replace("torch.", "")] for k, v in sd.items()])
    try:
        torch.nn.BatchNorm1d(5).load_state_dict(sd)
        t.fact("torch_loads_ours", "ok")
    except Exception as exc:
        t.fact("torch_loads_ours", f"{type(exc).__name__}: {_short(exc, 300)}")
    theirs = {
        "weight": torch.tensor(rng.uniform(0.5, 2, 5), dtype=torch.float32),
        "bias": torch.tensor(rng.normal(0, 1, 5), dtype=torch.float32),
        "running_mean": torch.tensor(rng.normal(0, 1, 5), dtype=torch.float32),
        "running_var": torch.tensor(rng.uniform(0.5, 2, 5), dtype=torch.float32),
        "num_batches_tracked": torch.tensor(7, dtype=torch.long),
    }
    m = t.call("BatchNorm1d(5)", M, 5)
    t.call("module.load_state_dict(an nn.BatchNorm1d(5) state_dict)", m.load_state_dict, theirs)
    loaded = t.call("module.state_dict() after load_state_dict", lambda: m.state_dict())
    for key in theirs:
        if key in loaded:
            t.array(f"loaded_{key}", loaded[key], f"state_dict()[{key!r}] after loading nn.BatchNorm1d's values")


@scenario(
    "module_backward",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "gradients through BatchNorm1d (x, weight and bias, (N, C, L) input) are right and come from "
    "your BatchNormFunction",
    rtol=1e-4,
    compare_facts=("uses_function",),
)
def _module_backward(t: Trial, rng) -> None:
    torch = _torch()
    m = _module(t, "BatchNorm1d(4)", 4)
    F = t.fn("BatchNormFunction")
    t.watch_backward_of(F)
    params = list(m.parameters())
    if len(params) != 2:
        raise StudentCodeFailed(
            "list(BatchNorm1d(4).parameters())",
            ValueError(f"expected 2 parameters (weight, bias), found {len(params)}"),
        )
    gamma, beta = _affine(rng, 4)
    with torch.no_grad():
        params[0].copy_(torch.tensor(gamma))
        params[1].copy_(torch.tensor(beta))
    x = _ncl(rng, 6, 4, 5)
    xt = _t(x, True)
    y = _forward(t, m, xt, "module(x) in training mode")
    t.fact("uses_function", _graph_has(y, getattr(F, "__name__", "BatchNormFunction") + "Backward"))
    dy = _t(rng.normal(0, 1, x.shape))
    label = "torch.autograd.grad(y, (x, weight, bias), dy) through your module"
    grads = t.call(label, torch.autograd.grad, y, (xt, params[0], params[1]), dy, allow_unused=True)
    for key, g in zip(("dx", "dweight", "dbias"), grads):
        t.array(key, g, f"{key} from {label}, x of shape (6, 4, 5)")


def _graph_has(y: Any, node_name: str, limit: int = 200) -> bool:
    """Whether the autograd graph behind ``y`` has a node called ``node_name``."""
    todo, seen = [getattr(y, "grad_fn", None)], 0
    while todo and seen < limit:
        node = todo.pop()
        if node is None:
            continue
        seen += 1
        if type(node).__name__ == node_name:
            return True
        todo.extend(fn for fn, _ in getattr(node, "next_functions", ()))
    return False


def _default_device() -> str:
    torch = _torch()
    return "cuda" if torch.cuda.is_available() else "meta"


@scenario(
    "module_device",
    "torch",
    ("BatchNorm1d", "BatchNormFunction"),
    "BatchNorm1d works on the device of its input: after module.to(device), outputs, parameters "
    "and buffers stay there, in training and evaluation mode, for (N, C) and (N, C, L) (the GPU "
    "when there is one; otherwise PyTorch's meta device stands in for a second device)",
    compare_facts=("devices", "shapes", "matches_cpu"),
)
def _module_device(t: Trial, rng) -> None:
    torch = _torch()
    device = t.options.get("device") or _default_device()
    t.fact("device", device)
    M = t.fn("BatchNorm1d")
    on_device = t.call(f"BatchNorm1d(5).to({device!r})", lambda: M(5).to(device))
    on_cpu = t.call("BatchNorm1d(5)", M, 5) if device != "meta" else None
    dtype = torch.float32 if device == "meta" else torch.float64
    if on_cpu is not None:
        on_device = t.call("module.double()", lambda: on_device.double())
        on_cpu = t.call("module.double()", lambda: on_cpu.double())
    devices: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    worst = 0.0
    for mode in ("train", "eval"):
        for m in (on_device, on_cpu):
            if m is not None:
                t.call(f"module.{mode}()", getattr(m, mode))
        for shape in ((8, 5), (4, 5, 3)):
            x = _ncl(rng, shape[0], 5, shape[2]) if len(shape) == 3 else _batch(rng, *shape)
            key = f"{mode}_{len(shape)}d"
            y = _forward(t, on_device, torch.tensor(x, dtype=dtype, device=device), f"module(x) on {device} in {mode} mode")
            devices[key] = _where(y, device)
            shapes[key] = list(getattr(y, "shape", []))
            if on_cpu is not None:
                y_cpu = _forward(t, on_cpu, torch.tensor(x, dtype=dtype), f"module(x) on the CPU in {mode} mode")
                got, want = _to_numpy(y), _to_numpy(y_cpu)
                if got is not None and want is not None and got.shape == want.shape:
                    scale = float(np.abs(want).max()) or 1.0
                    worst = max(worst, float(np.abs(got - want).max()) / scale)
                else:
                    worst = float("inf")
    devices["parameters"] = sorted({str(_where(p, device)) for p in on_device.parameters()})
    devices["buffers"] = sorted({str(_where(b, device)) for b in on_device.buffers()})
    t.fact("devices", devices)
    t.fact("shapes", shapes)
    # on a GPU: the same numbers as on the CPU (float64); on the meta device there are no numbers
    t.fact("matches_cpu", None if on_cpu is None else bool(worst <= 1e-6))


def _where(v: Any, device: str) -> str | None:
    """``"the input's device"``, or the other device ``v`` is on (None for a missing tensor)."""
    d = getattr(getattr(v, "device", None), "type", None)
    return "the input's device" if d == device else d
