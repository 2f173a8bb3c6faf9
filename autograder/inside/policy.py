r"""The forbidden-library policy: which functions a graded function may not hand its work to.

One rule, asked by both sides of the grader: the run-time watch inside the sandbox
(:mod:`autograder.inside.watch`, on every call the student's code makes while a check runs)
and the static analysis of the student's source on the trusted side
(:mod:`autograder.judging.static`). Each asks :func:`rule` about a dotted name
(``"bnlib.numpy.forward_train"``, ``"torch.nn.functional.batch_norm"``, an aten kernel such as
``"aten.native_batch_norm.default"``) and gets back why that name counts as delegation, or
``None`` when it is allowed. The verdict's message quotes that reason.

The rule, in order:

1. The course's finite-difference checker is forbidden in graded code: the copy the notebooks
   carry in a locked cell (:data:`FINITE_DIFFERENCES`, defined in the notebook, whose module is
   :data:`NOTEBOOK`) and ``bnlib.gradcheck``. The visible test cells call it to check a backward
   pass; a backward pass that calls it hands its gradient to finite differences. In a NumPy
   assignment the graded functions are themselves the backward passes, so it is forbidden in
   all of them; in ``bn-torch``, inside the hand-written backward (``in_backward``).
2. The rest of ``bnlib`` is forbidden everywhere: it is the reference the answers are compared
   with.
3. In a NumPy assignment (family ``"numpy"``), every function of another array or deep-learning
   library (:data:`FOREIGN_MODULES`) is forbidden: the assignment is NumPy only.
4. In ``bn-torch`` (family ``"torch"``), ordinary torch operations are allowed, but a library's
   normalization kernel is not (:data:`NORM_KERNELS`; layer, instance and group norm count too:
   on a transposed input they compute batch norm), whether it is reached through torch's Python
   API or seen running as an aten operator.
5. Inside a hand-written backward pass (``in_backward``), autograd is forbidden
   (:data:`AUTOGRAD`, :data:`AUTOGRAD_FUNCTIONS`): it would compute the gradient the student is
   asked to derive.

This module runs INSIDE the sandbox: the standard library only.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = [
    "FAMILIES",
    "FOREIGN_MODULES",
    "NORM_KERNELS",
    "GRADIENT_CHECKER",
    "NOTEBOOK",
    "FINITE_DIFFERENCES",
    "FINITE_DIFFERENCES_WHY",
    "AUTOGRAD",
    "AUTOGRAD_FUNCTIONS",
    "REFERENCE",
    "NUMPY_ONLY",
    "KERNEL",
    "AUTOGRAD_WHY",
    "rule",
]

#: The families of assignments: which packages a sandbox offers (``autograder.course.spec.Assignment.kind``).
FAMILIES = ("numpy", "torch")
#: Top-level modules whose functions running inside a NumPy assignment mean delegation.
FOREIGN_MODULES = ("bnlib", "torch", "jax", "tensorflow", "autograd", "keras")
#: Names of normalization kernels: any of them (in a library's name) in ``bn-torch`` means delegation.
NORM_KERNELS = ("batch_norm", "batchnorm", "layer_norm", "layernorm", "instance_norm", "instancenorm",
                "group_norm", "groupnorm")
#: The reference library's gradient checker (the book's and the grader's; not in the sandbox).
GRADIENT_CHECKER = "bnlib.gradcheck"
#: The module name of the notebook's own code (the executor's and IPython's namespace).
NOTEBOOK = "__main__"
#: The checker's functions that compute gradients by finite differences, as the notebooks'
#: locked checker cell defines them (``autograder/course/checker.py`` makes that cell from
#: ``bnlib/gradcheck.py``): a graded function calling one of them delegates.
FINITE_DIFFERENCES = ("check_gradients", "numerical_gradient")
#: Autograd's entry points, by dotted prefix: forbidden inside a hand-written backward pass.
AUTOGRAD = ("torch.autograd.grad", "torch.autograd.backward", "torch.autograd.functional", "torch.func",
            "functorch", "torch.enable_grad", "torch.set_grad_enabled")
#: Autograd's functions by their own name, wherever torch defines them (``Tensor.backward`` lives
#: in ``torch._tensor``, ``torch.func.vjp`` in ``torch._functorch``): forbidden inside a backward pass.
AUTOGRAD_FUNCTIONS = ("grad", "backward", "vjp", "jacrev", "vjp_fn")

#: Why bnlib counts as delegation.
REFERENCE = "that is bnlib, the course's reference implementation"
#: Why another library counts as delegation in a NumPy assignment.
NUMPY_ONLY = "this assignment is NumPy only"
#: Why a normalization kernel counts as delegation.
KERNEL = "that is a library's own normalization kernel (batch, layer, instance or group norm)"
#: Why the course's gradient checker counts as delegation in a graded function.
FINITE_DIFFERENCES_WHY = ("finite differences compute that gradient, not your backward pass (the course's "
                          "checker is for the test cells)")
#: Why autograd counts as delegation inside a hand-written backward pass.
AUTOGRAD_WHY = "autograd computes the gradient, not your backward pass"

#: The top-level names :func:`rule` can forbid anything in; everything else is allowed at once.
_WATCHED = frozenset((*FOREIGN_MODULES, "aten", "functorch", NOTEBOOK))
_CHECKER = frozenset(f"{NOTEBOOK}.{name}" for name in FINITE_DIFFERENCES)


def _within(name: str, prefix: str) -> bool:
    """Whether the dotted ``name`` is ``prefix`` or lies inside it."""
    return name == prefix or name.startswith(prefix + ".")


@lru_cache(maxsize=8192)
def rule(name: str, family: str, in_backward: bool = False) -> str | None:
    """Why a graded function of ``family`` that uses ``name`` delegates; ``None`` when it may.

    Args:
        name: a dotted name: a module, a function or class (``"torch.nn.functional.batch_norm"``),
            or an aten operator (``"aten.native_batch_norm.default"``).
        family: ``"numpy"`` or ``"torch"``, the assignment's family.
        in_backward: the name is used inside the student's hand-written backward pass.
            Default: False

    Returns:
        One of :data:`FINITE_DIFFERENCES_WHY`, :data:`REFERENCE`, :data:`NUMPY_ONLY`,
        :data:`KERNEL`, :data:`AUTOGRAD_WHY`, or ``None``.

    Raises:
        ValueError: for a family other than those of :data:`FAMILIES`.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; the families are {FAMILIES}")
    top = name.partition(".")[0]
    if top not in _WATCHED:
        return None
    if name in _CHECKER or _within(name, GRADIENT_CHECKER):
        return FINITE_DIFFERENCES_WHY if family == "numpy" or in_backward else None
    if top == NOTEBOOK:
        return None
    if top == "bnlib":
        return REFERENCE
    if family == "numpy":
        return NUMPY_ONLY if top in FOREIGN_MODULES else None
    low = name.lower()
    if any(kernel in low for kernel in NORM_KERNELS):
        return KERNEL
    if in_backward and (any(_within(name, p) for p in AUTOGRAD)
                        or (top == "torch" and name.rpartition(".")[2] in AUTOGRAD_FUNCTIONS)):
        return AUTOGRAD_WHY
    return None
