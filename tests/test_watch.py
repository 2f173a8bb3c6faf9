"""autograder.inside.watch: what the run-time watch sees of the student's calls, judged by the policy."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from autograder.inside.policy import rule
from autograder.inside.watch import Watch, foreign_globals


def _student(source: str) -> dict:
    """A notebook namespace with ``source`` executed in it."""
    ns = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(source, "<student cell>", "exec"), ns)
    return ns


def _ran(family: str, fn, *args, backward=()) -> set[str]:
    found: set[str] = set()
    with Watch(family, found, backward):
        fn(*args)
    return found


GRADCHECK = """
def graded(x):
    def f(x):
        return 2 * x
    report = check_gradients(f, {"x": x}, np.ones_like(x), {"x": 2 * np.ones_like(x)})
    return bool(report)


def derivative(x):
    estimate = numerical_gradient  # under another name: the function is still the checker's
    return estimate(lambda x: x**2, {"x": x}, "x", np.ones_like(x))
"""


def test_a_graded_function_calling_the_notebooks_gradient_checker_delegates():
    """The checker cell's functions, called from graded code: at run time, in its globals, in its source."""
    from autograder.course.checker import cell_source
    from autograder.judging.static import Analysis

    ns = _student("import numpy as np\n" + cell_source() + GRADCHECK)
    assert "__main__.check_gradients" in _ran("numpy", ns["graded"], np.arange(3.0))
    assert _ran("numpy", ns["derivative"], np.arange(3.0)) == {"__main__.numerical_gradient"}
    assert dict(foreign_globals(ns["derivative"], "numpy")) == {"numerical_gradient": "__main__.numerical_gradient"}
    analysis = Analysis(GRADCHECK, "numpy")
    assert set(analysis.uses["graded"]) == {"__main__.check_gradients"}
    assert set(analysis.uses["derivative"]) == {"__main__.numerical_gradient"}


def test_in_bn_torch_the_gradient_checker_counts_only_inside_the_backward():
    from autograder.course.checker import cell_source

    ns = _student("import numpy as np\n" + cell_source() + GRADCHECK)
    assert _ran("torch", ns["graded"], np.arange(3.0)) == set()
    assert "__main__.check_gradients" in _ran("torch", ns["graded"], np.arange(3.0), backward=(ns["graded"].__code__,))


def test_a_library_is_seen_where_the_student_calls_it_not_inside():
    ns = _student("import bnlib.numpy as bn\ndef graded(x):\n    return bn.forward_train(x, 1.0, 0.0)[0]\n")
    assert _ran("numpy", ns["graded"], np.arange(8.0).reshape(4, 2)) == {"bnlib.numpy.forward_train"}


def test_globals_bound_to_forbidden_things_are_named_with_their_origin():
    ns = _student("import bnlib.numpy as bn\nimport numpy as np\ndef helper(x):\n    return bn.batch_mean(x)\n"
                  "def graded(x):\n    return helper(np.asarray(x))\n")
    found = dict(foreign_globals(ns["graded"], "numpy"))
    assert found == {"bn": "bnlib.numpy", "bn.batch_mean": "bnlib.numpy.batch_mean"}
    assert all(rule(origin, "numpy") for origin in found.values())


def test_numpy_itself_is_never_foreign():
    ns = _student("import numpy as np\ndef graded(x):\n    return np.sqrt(np.mean(x, axis=0))\n")
    assert _ran("numpy", ns["graded"], np.ones((4, 3))) == set()
    assert foreign_globals(ns["graded"], "numpy") == []


def test_importing_a_module_inside_the_call_is_not_a_use_of_it():
    ns = _student("def graded(x):\n    import json, email.mime.text\n    return x\n")
    assert _ran("numpy", ns["graded"], 1) == set()


def test_torch_in_a_numpy_assignment_is_seen_at_run_time():
    pytest.importorskip("torch")
    ns = _student("import torch\ndef graded(x):\n    return torch.from_numpy(x).sum().item()\n")
    found = _ran("numpy", ns["graded"], np.ones(3))
    assert "torch.from_numpy" in found and all(rule(f, "numpy") for f in found)


def test_a_normalization_kernel_is_seen_as_an_aten_operator_however_it_is_reached():
    torch = pytest.importorskip("torch")
    ns = _student("import torch\ndef graded(x):\n"
                  "    kernel = getattr(torch.nn.functional, 'layer' + '_norm')\n"
                  "    return kernel(x.T, x.shape[:1]).T\n")
    found = _ran("torch", ns["graded"], torch.randn(6, 3, dtype=torch.float64))
    assert "aten.native_layer_norm.default" in found


def test_ordinary_torch_operations_are_allowed_in_bn_torch():
    torch = pytest.importorskip("torch")
    ns = _student("import torch\ndef graded(x):\n    var, mu = torch.var_mean(x, dim=0, unbiased=False)\n"
                  "    return (x - mu) * torch.rsqrt(var + 1e-5)\n")
    assert _ran("torch", ns["graded"], torch.randn(6, 3, dtype=torch.float64)) == set()


AUTOGRAD = """
import torch

class Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xs = x.detach().requires_grad_()
            (dx,) = torch.autograd.grad(xs ** 2, xs, dy)
        return dx
"""


def test_autograd_counts_only_inside_the_watched_backward():
    torch = pytest.importorskip("torch")
    ns = _student(AUTOGRAD)
    F = ns["Function"]

    def forward_and_backward():
        x = torch.randn(4, dtype=torch.float64, requires_grad=True)
        torch.autograd.grad(F.apply(x).sum(), x)

    assert _ran("torch", forward_and_backward) == set()  # the scenario's own autograd.grad is fine
    found = _ran("torch", forward_and_backward, backward=[F.backward.__code__])
    assert found == {"torch.autograd.grad"}, found
