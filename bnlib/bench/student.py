r"""A student's ``BatchNorm1d``, from a notebook or a module: loaded, then checked against PyTorch's.

The ``bn-torch`` assignment asks for a drop-in ``nn.BatchNorm1d``. This module finds it in a
notebook (the definitions of its code cells, without its demonstrations and tests) or in a
Python file, checks that it computes what ``torch.nn.BatchNorm1d`` computes (outputs,
gradients, running statistics) on inputs that tell right from wrong, and only then hands it
to the harness as a :class:`bnlib.bench.core.Kernel`, to be timed side by side with
``nn.BatchNorm1d``.

``python -m bnlib.bench --student bn-torch.ipynb`` uses :func:`student_kernel`, which *runs*
the student's code in this process: call it where that code may run. (The autograder times
a class itself, in its sandbox; it reads notebooks with :func:`notebook_source`.)
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bnlib.bench.core import Kernel
from bnlib.bench.kernels import module_kernel

__all__ = [
    "StudentKernelError",
    "notebook_source",
    "load_module_class",
    "check_against_torch",
    "uses_torch_batch_norm",
    "student_kernel",
]


class StudentKernelError(Exception):
    """The student's code could not be loaded, or its BatchNorm1d does not match PyTorch's."""


_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _definitions(source: str, where: str) -> list[str]:
    """The top-level imports, functions, classes and constant assignments of one cell."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    text = "\n".join(lines)
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise StudentKernelError(f"{where} has a syntax error (line {e.lineno}): {e.msg}") from None
    kept = []
    for node in tree.body:
        keep = isinstance(node, _KEEP)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            with contextlib.suppress(ValueError, TypeError, SyntaxError, RecursionError):
                ast.literal_eval(node.value)
                keep = True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            keep = not (module or "").split(".")[0] == "autograder"  # the hidden tests' probe
        if keep:
            kept.append(ast.get_source_segment(text, node))
    return kept


def notebook_source(path: str | os.PathLike) -> str:
    """The definitions in a notebook's code cells, as one Python source.

    Keeps every code cell's top-level imports, ``def``, ``class`` and assignments of
    literal constants, in order; drops everything else (demonstrations, visible tests,
    IPython magics) and nbgrader's graded test cells entirely, so that loading the
    notebook defines the student's classes without running their experiments.
    """
    path = Path(path)
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells = notebook["cells"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StudentKernelError(f"cannot read {path} as a Jupyter notebook: {e}") from None
    parts = []
    for number, cell in enumerate(cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        grading = cell.get("metadata", {}).get("nbgrader", {})
        if grading.get("grade") and not grading.get("solution"):
            continue  # an autograder test cell
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        parts.extend(_definitions(source, f"{path.name}, cell {number}"))
    return "\n\n".join(parts) + "\n"


def load_module_class(path: str | os.PathLike, class_name: str = "BatchNorm1d") -> type:
    """Load ``class_name`` from a notebook (``.ipynb``: :func:`notebook_source`) or a Python file.

    This runs the student's code in this process: run it where you would run their notebook.

    Raises:
        StudentKernelError: the file cannot be read or run, or defines no such class.
    """
    path = Path(path)
    if not path.is_file():
        raise StudentKernelError(f"no such file: {path}")
    if path.suffix == ".ipynb":
        source = notebook_source(path)
    elif path.suffix == ".py":
        source = path.read_text(encoding="utf-8")
    else:
        raise StudentKernelError(f"{path}: expected a notebook (.ipynb) or a Python file (.py)")
    module_name = f"bnlib_bench_student_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[module_name] = module  # dataclasses, pickling and inspect look modules up here
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except Exception as e:
        raise StudentKernelError(f"running the code of {path.name} raised {type(e).__name__}: {e}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise StudentKernelError(f"{path.name} defines no class {class_name}")
    return cls


def _random_layer_state(layer: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        c = layer.num_features
        layer.weight.copy_(torch.rand(c, generator=generator) + 0.5)
        layer.bias.copy_(torch.randn(c, generator=generator))
        layer.running_mean.copy_(torch.randn(c, generator=generator))
        layer.running_var.copy_(torch.rand(c, generator=generator) + 0.5)


def check_against_torch(make: Callable[[int], nn.Module], dtype: torch.dtype = torch.float32) -> list[str]:
    """Compare ``make(C)`` with ``nn.BatchNorm1d(C)``: two training steps, then one evaluation step.

    Inputs that tell right from wrong (``N >= 4``, a large ``eps``, small variances, random
    ``dy``, non-trivial ``gamma``, ``beta`` and running statistics), shapes ``(N, C)`` and
    ``(N, C, L)``. Compares ``y``, ``dx``, ``dgamma``, ``dbeta``, ``running_mean`` and
    ``running_var`` at the scale of each quantity.

    Returns:
        One sentence per mismatch (empty: it matches).
    """
    problems: list[str] = []
    generator = torch.Generator().manual_seed(0)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    for shape in ((16, 5), (6, 3, 7)):
        c = shape[1]
        reference = nn.BatchNorm1d(c, eps=1e-2, dtype=dtype)
        _random_layer_state(reference, generator)
        try:
            candidate = make(c, eps=1e-2).to(dtype)
            candidate.load_state_dict(reference.state_dict())
        except Exception as e:  # the student's constructor or state dict
            return [
                f"BatchNorm1d({c}, eps=0.01) then load_state_dict(nn.BatchNorm1d's state_dict()) "
                f"raised {type(e).__name__}: {e}"
            ]
        for step, training in enumerate((True, True, False)):
            reference.train(training), candidate.train(training)
            x = (torch.randn(shape, generator=generator, dtype=dtype) * 0.3 + 2).requires_grad_()
            dy = torch.randn(shape, generator=generator, dtype=dtype)
            got: dict[str, torch.Tensor] = {}
            want: dict[str, torch.Tensor] = {}
            for layer, out in ((reference, want), (candidate, got)):
                xi = x.detach().clone().requires_grad_()
                params = [layer.weight, layer.bias]
                try:
                    y = layer(xi)
                    grads = torch.autograd.grad(y, [xi] + params, dy)
                except Exception as e:
                    if layer is reference:
                        raise
                    return problems + [f"{shape}, step {step + 1}: it raised {type(e).__name__}: {e}"]
                out.update(y=y.detach(), dx=grads[0], dgamma=grads[1], dbeta=grads[2])
                out.update(running_mean=layer.running_mean.detach().clone(),
                           running_var=layer.running_var.detach().clone())
            mode = "training" if training else "evaluation"
            for key in want:
                w, g = want[key], got[key]
                if g is None or tuple(g.shape) != tuple(w.shape):
                    got_shape = None if g is None else tuple(g.shape)
                    problems.append(f"{shape}, {mode}: {key} has shape {got_shape}, expected {tuple(w.shape)}")
                    continue
                scale = float(w.abs().max()) + 1.0
                err = float((g.to(w.dtype) - w).abs().max())
                if not err <= tol * scale:
                    problems.append(f"{shape}, {mode}: {key} differs from nn.BatchNorm1d's by {err:.2e}")
    return problems


def uses_torch_batch_norm(make: Callable[[int], nn.Module]) -> bool:
    """Whether a training step of ``make(C)`` runs one of PyTorch's own batch-norm operators."""

    class Spy(TorchDispatchMode):
        seen = False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "batch_norm" in func.name():
                Spy.seen = True
            return func(*args, **(kwargs or {}))

    layer = make(3).train()
    x = torch.randn(8, 3, requires_grad=True)
    with Spy():
        y = layer(x)
        torch.autograd.grad(y, [x], torch.randn(8, 3))
    return Spy.seen


def student_kernel(path: str | os.PathLike, class_name: str = "BatchNorm1d", name: str = "student") -> Kernel:
    """A :class:`bnlib.bench.core.Kernel` from a student's ``BatchNorm1d``, after checking it matches PyTorch's.

    Raises:
        StudentKernelError: it cannot be loaded, or does not match ``nn.BatchNorm1d``
            (the message lists what differs).
    """
    cls = load_module_class(path, class_name)
    problems = check_against_torch(cls)
    if problems:
        raise StudentKernelError(
            f"{Path(path).name}: {class_name} does not match nn.BatchNorm1d, so it is not timed:\n  "
            + "\n  ".join(problems[:6])
        )
    description = f"{class_name} from {Path(path).name}"
    if uses_torch_batch_norm(cls):
        description += " (calls PyTorch's own batch norm)"
    return module_kernel(name, description, cls)
