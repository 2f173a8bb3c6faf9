"""autograder.inside.policy: one table of what a graded function may and may not hand its work to.

The run-time watch (autograder.inside.watch) and the static analysis (autograder.judging.static)
both ask this rule; the last tests check that each of them follows it on the same names.
"""

from __future__ import annotations

import pytest

from autograder.inside.policy import AUTOGRAD_WHY, FINITE_DIFFERENCES_WHY, KERNEL, NUMPY_ONLY, REFERENCE, rule
from autograder.judging.static import Analysis

ALLOWED = None

#: (dotted name, family, inside a hand-written backward) -> the reason, or ALLOWED
TABLE = [
    # bnlib: the reference is forbidden everywhere; finite differences (bnlib's checker, or the
    # notebook's copy of it) in NumPy graded code and in bn-torch's backward
    ("bnlib", "numpy", False, REFERENCE),
    ("bnlib.numpy.forward_train", "numpy", False, REFERENCE),
    ("bnlib.numpy.forward_train", "torch", False, REFERENCE),
    ("bnlib.torch.BatchNormFunction", "torch", False, REFERENCE),
    ("bnlib.torch.BatchNormFunction.apply", "torch", True, REFERENCE),
    ("bnlib.fused_numpy.forward", "numpy", False, REFERENCE),
    ("bnlib.gradcheck", "numpy", False, FINITE_DIFFERENCES_WHY),
    ("bnlib.gradcheck.check_gradients", "numpy", False, FINITE_DIFFERENCES_WHY),
    ("bnlib.gradcheck.check_gradients", "torch", False, ALLOWED),
    ("bnlib.gradcheck.check_gradients", "torch", True, FINITE_DIFFERENCES_WHY),
    ("bnlib.gradcheck.numerical_gradient", "numpy", False, FINITE_DIFFERENCES_WHY),
    ("__main__.numerical_gradient", "numpy", False, FINITE_DIFFERENCES_WHY),
    ("__main__.check_gradients", "numpy", False, FINITE_DIFFERENCES_WHY),
    ("__main__.numerical_gradient", "torch", True, FINITE_DIFFERENCES_WHY),
    ("__main__.numerical_gradient", "torch", False, ALLOWED),
    ("__main__.relative_error", "numpy", False, ALLOWED),  # no gradient computed: a plain norm
    ("__main__.bn_forward_train", "numpy", False, ALLOWED),  # the student's own functions
    ("bnlib.gradchecker", "numpy", False, REFERENCE),  # a prefix of the name is not the module
    # PyTorch's batch norm, by its Python names, in bn-torch
    ("torch.nn.functional.batch_norm", "torch", False, KERNEL),
    ("torch.batch_norm", "torch", False, KERNEL),
    ("torch.native_batch_norm", "torch", False, KERNEL),
    ("torch.nn.BatchNorm1d", "torch", False, KERNEL),
    ("torch.nn.modules.batchnorm.BatchNorm1d", "torch", False, KERNEL),
    ("torch.nn.modules.batchnorm._BatchNorm.forward", "torch", True, KERNEL),
    # ... and as aten operators, whatever Python name reached them
    ("aten.native_batch_norm.default", "torch", False, KERNEL),
    ("aten._native_batch_norm_legit.no_stats", "torch", False, KERNEL),
    ("aten.native_layer_norm.default", "torch", False, KERNEL),
    ("aten.native_group_norm.default", "torch", False, KERNEL),
    ("aten.add.Tensor", "torch", False, ALLOWED),
    ("aten.var_mean.correction", "torch", False, ALLOWED),
    # layer, group and instance norm compute batch norm on a transposed input
    ("torch.layer_norm", "torch", False, KERNEL),
    ("torch.nn.functional.layer_norm", "torch", False, KERNEL),
    ("torch.nn.LayerNorm", "torch", False, KERNEL),
    ("torch.nn.functional.group_norm", "torch", False, KERNEL),
    ("torch.nn.GroupNorm", "torch", False, KERNEL),
    ("torch.nn.functional.instance_norm", "torch", False, KERNEL),
    ("torch.nn.InstanceNorm1d", "torch", False, KERNEL),
    # torch, any op, in a NumPy assignment
    ("torch", "numpy", False, NUMPY_ONLY),
    ("torch.tensor", "numpy", False, NUMPY_ONLY),
    ("torch.from_numpy", "numpy", False, NUMPY_ONLY),
    ("torch.nn.functional.batch_norm", "numpy", False, NUMPY_ONLY),
    ("torch.autograd.grad", "numpy", True, NUMPY_ONLY),
    # the other libraries
    ("jax.numpy.mean", "numpy", False, NUMPY_ONLY),
    ("jax", "numpy", False, NUMPY_ONLY),
    ("tensorflow.nn.batch_normalization", "numpy", False, NUMPY_ONLY),
    ("tensorflow.nn.moments", "numpy", False, NUMPY_ONLY),
    ("keras.layers.BatchNormalization", "numpy", False, NUMPY_ONLY),
    ("autograd.grad", "numpy", False, NUMPY_ONLY),
    ("jax.nn.standardize", "torch", False, ALLOWED),
    ("tensorflow.keras.layers.BatchNormalization", "torch", False, KERNEL),
    # autograd: forbidden inside a hand-written backward, allowed elsewhere in bn-torch
    ("torch.autograd.grad", "torch", True, AUTOGRAD_WHY),
    ("torch.autograd.grad", "torch", False, ALLOWED),
    ("torch.autograd.backward", "torch", True, AUTOGRAD_WHY),
    ("torch.autograd.functional.jacobian", "torch", True, AUTOGRAD_WHY),
    ("torch.autograd.functional.vjp", "torch", True, AUTOGRAD_WHY),
    ("torch.func.vjp", "torch", True, AUTOGRAD_WHY),
    ("torch.func.grad", "torch", True, AUTOGRAD_WHY),
    ("torch._functorch.eager_transforms.vjp", "torch", True, AUTOGRAD_WHY),
    ("torch._functorch.apis.grad", "torch", True, AUTOGRAD_WHY),
    ("torch._tensor.backward", "torch", True, AUTOGRAD_WHY),
    ("torch.Tensor.backward", "torch", True, AUTOGRAD_WHY),
    ("torch.Tensor.backward", "torch", False, ALLOWED),
    ("functorch.grad", "torch", True, AUTOGRAD_WHY),
    ("torch.enable_grad", "torch", True, AUTOGRAD_WHY),
    ("torch.set_grad_enabled", "torch", True, AUTOGRAD_WHY),
    ("torch.autograd.grad_mode.enable_grad", "torch", True, ALLOWED),  # grad_mode is not grad
    ("torch.autograd.function.Function.apply", "torch", True, ALLOWED),  # function is not functional
    ("torch.no_grad", "torch", True, ALLOWED),
    # ordinary torch ops in bn-torch, in the forward and in the backward
    ("torch", "torch", False, ALLOWED),
    ("torch.sqrt", "torch", False, ALLOWED),
    ("torch.rsqrt", "torch", True, ALLOWED),
    ("torch.var_mean", "torch", False, ALLOWED),
    ("torch.nn.Module", "torch", False, ALLOWED),
    ("torch.nn.Parameter", "torch", False, ALLOWED),
    ("torch.nn.modules.module._call_impl", "torch", False, ALLOWED),
    ("torch.nn.functional.normalize", "torch", False, ALLOWED),
    ("torch.linalg.norm", "torch", True, ALLOWED),
    ("torch.autograd.Function", "torch", False, ALLOWED),
    # numpy, and the student's own code
    ("numpy", "numpy", False, ALLOWED),
    ("numpy.mean", "numpy", False, ALLOWED),
    ("numpy.sqrt", "torch", True, ALLOWED),
    ("__main__.batch_norm", "torch", False, ALLOWED),
    ("__main__.helper", "numpy", False, ALLOWED),
    ("math.sqrt", "numpy", False, ALLOWED),
]


@pytest.mark.parametrize("name,family,in_backward,why", TABLE,
                         ids=[f"{n}-{f}{'-backward' if b else ''}" for n, f, b, _ in TABLE])
def test_policy_table(name, family, in_backward, why):
    assert rule(name, family, in_backward) == why


def test_an_unknown_family_is_an_error_that_names_the_families():
    with pytest.raises(ValueError, match="unknown family 'jax'.*numpy"):
        rule("numpy.mean", "jax")


# The static analysis follows the table: each name, used in a graded function's body.
_IMPORTABLE = [row for row in TABLE if "." in row[0] and not row[0].startswith(("__main__", "aten."))]


@pytest.mark.parametrize("name,family,in_backward,why", _IMPORTABLE,
                         ids=[f"{n}-{f}{'-backward' if b else ''}" for n, f, b, _ in _IMPORTABLE])
def test_the_source_analysis_follows_the_policy(name, family, in_backward, why):
    module, _, attr = name.rpartition(".")
    source = f"from {module} import {attr} as used\ndef graded(x):\n    return used(x)\n"
    analysis = Analysis(source, family)
    found = {**analysis.uses["graded"], **(analysis.backward_uses["graded"] if in_backward else {})}
    assert set(found.values()) == ({why} if why else set()), found


def test_the_policys_families_are_the_kinds_of_the_courses_assignments():
    """inside/ cannot import the course's registry: the two spellings are kept equal here."""
    from autograder.course.spec import COURSE
    from autograder.inside.policy import FAMILIES

    assert set(FAMILIES) == {a.kind for a in COURSE}
