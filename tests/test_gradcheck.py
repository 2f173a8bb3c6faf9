"""bnlib.gradcheck: finite differences that catch wrong backward passes and pass right ones."""

from __future__ import annotations

import numpy as np
import pytest

import bnlib.numpy as bnp
from bnlib.gradcheck import GradcheckReport, check_gradients, numerical_gradient, relative_error


def test_numerical_gradient_of_a_known_function():
    a = np.array([1.0, -2.0, 3.0])
    dy = np.array([0.5, 1.0, -1.0])
    grad = numerical_gradient(lambda a: a**3, {"a": a}, "a", dy)
    np.testing.assert_allclose(grad, 3 * a**2 * dy, rtol=1e-8)


def test_numerical_gradient_leaves_the_arguments_unchanged():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    copy = a.copy()
    numerical_gradient(lambda a: a * 2, {"a": a}, "a", np.ones((2, 2)))
    np.testing.assert_array_equal(a, copy)


def test_relative_error_is_normwise_and_zero_for_two_zeros():
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == pytest.approx(1.0)
    assert relative_error(np.array([1.0]), np.array([1.0 + 1e-9])) == pytest.approx(5e-10, rel=1e-3)


def test_relative_error_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        relative_error(np.zeros(3), np.zeros(4))


def _bn_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 3)) * 2 + 1
    gamma, beta, dy = rng.normal(size=3), rng.normal(size=3), rng.normal(size=(6, 3))
    return x, gamma, beta, dy


def _f(x, gamma, beta):
    return bnp.forward_train(x, gamma, beta, 1e-5)[0]


def test_correct_backward_passes_and_reports_tiny_errors():
    x, gamma, beta, dy = _bn_problem()
    _, cache = bnp.forward_train(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = bnp.backward_compact(dy, cache)
    report = check_gradients(_f, {"x": x, "gamma": gamma, "beta": beta}, dy,
                             {"x": dx, "gamma": dgamma, "beta": dbeta})
    assert report.ok and bool(report)
    assert max(report.errors.values()) < 1e-8


def test_backward_missing_the_mean_path_is_caught_on_x_only():
    x, gamma, beta, dy = _bn_problem(1)
    _, cache = bnp.forward_train(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = bnp.backward_compact(dy, cache)
    wrong_dx = dx - dx.mean(axis=0) + (dy * gamma * cache.istd).mean(axis=0)  # mean path dropped
    report = check_gradients(_f, {"x": x, "gamma": gamma, "beta": beta}, dy,
                             {"x": wrong_dx, "gamma": dgamma, "beta": dbeta})
    assert not report.ok
    assert report.errors["x"] > 1e-3
    assert report.errors["gamma"] < 1e-8 and report.errors["beta"] < 1e-8


def test_report_prints_one_row_per_argument_with_a_verdict():
    text = str(GradcheckReport({"x": 1e-10, "gamma": 0.3}, tol=1e-7))
    rows = text.splitlines()
    assert rows[0].split() == ["argument", "relative", "error", "verdict"]
    assert rows[1].split()[0] == "x" and rows[1].endswith("ok")
    assert rows[2].split()[0] == "gamma" and rows[2].endswith("WRONG")


def test_gradients_for_unknown_arguments_are_an_error():
    with pytest.raises(KeyError, match="delta"):
        check_gradients(lambda a: a, {"a": np.ones(2)}, np.ones(2), {"delta": np.ones(2)})


def test_docstring_example_runs():
    import doctest

    import bnlib.gradcheck

    result = doctest.testmod(bnlib.gradcheck)
    assert result.attempted > 0 and result.failed == 0
