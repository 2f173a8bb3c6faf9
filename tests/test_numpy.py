"""bnlib.numpy: the equations one by one, the backward passes, and the layer's semantics.

The layer's numbers against PyTorch's: tests/test_conformance.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import bnlib.numpy as bnp
from bnlib.gradcheck import check_gradients

# ---------------------------------------------------------------------------------------------
# The equations, with numbers a reader can check by hand.
# ---------------------------------------------------------------------------------------------

X = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [6.0, 60.0]])  # m = 4, C = 2


def test_batch_mean_averages_each_feature_over_the_batch():
    np.testing.assert_array_equal(bnp.batch_mean(X), [3.0, 30.0])


def test_batch_var_divides_by_m_not_m_minus_one():
    # deviations of feature 0: -2, -1, 0, 3 -> squares 4, 1, 0, 9 -> sum 14 -> 14/4
    np.testing.assert_allclose(bnp.batch_var(X, bnp.batch_mean(X)), [3.5, 350.0])


def test_normalize_puts_eps_inside_the_square_root():
    mu, var = np.array([3.0]), np.array([3.5])
    x_hat = bnp.normalize(np.array([[1.0]]), mu, var, eps=0.5)
    np.testing.assert_allclose(x_hat, [[-2.0 / 2.0]])  # sqrt(3.5 + 0.5) = 2


def test_normalize_of_a_constant_feature_is_zero_not_nan():
    x = np.full((5, 1), 7.0)
    mu = bnp.batch_mean(x)
    x_hat = bnp.normalize(x, mu, bnp.batch_var(x, mu), eps=1e-5)
    np.testing.assert_array_equal(x_hat, np.zeros((5, 1)))


def test_normalized_batch_has_zero_mean_and_unit_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(5, 3, size=(64, 4))
    mu = bnp.batch_mean(x)
    x_hat = bnp.normalize(x, mu, bnp.batch_var(x, mu), eps=0.0)
    np.testing.assert_allclose(x_hat.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(x_hat.var(axis=0), 1, rtol=1e-12)


def test_scale_shift_multiplies_elementwise_then_adds():
    y = bnp.scale_shift(np.array([[1.0, -1.0]]), np.array([2.0, 3.0]), np.array([0.5, -0.5]))
    np.testing.assert_array_equal(y, [[2.5, -3.5]])


def test_gamma_sqrt_var_eps_and_beta_mu_recover_the_input():
    rng = np.random.default_rng(1)
    x = rng.normal(2, 4, size=(16, 3))
    mu = bnp.batch_mean(x)
    var = bnp.batch_var(x, mu)
    eps = 1e-3
    y = bnp.scale_shift(bnp.normalize(x, mu, var, eps), np.sqrt(var + eps), mu)
    np.testing.assert_allclose(y, x, rtol=1e-12)


def test_unbiased_var_is_m_over_m_minus_one_times_larger():
    np.testing.assert_allclose(bnp.unbiased_var(np.array([3.5]), 4), [14.0 / 3.0])


def test_running_var_uses_unbiased_estimate():
    x = X[:, :1]
    mu = bnp.batch_mean(x)
    var = bnp.batch_var(x, mu)
    _, running_var = bnp.update_running_stats(np.zeros(1), np.ones(1), mu, var, m=4, momentum=1.0)
    np.testing.assert_allclose(running_var, np.var(x, axis=0, ddof=1))


def test_momentum_weights_the_new_batch_as_pytorch():
    rm, rv = bnp.update_running_stats(
        np.array([10.0]), np.array([1.0]), np.array([0.0]), np.array([3.0]), m=4, momentum=0.1
    )
    np.testing.assert_allclose(rm, [9.0])  # 0.9 * 10 + 0.1 * 0
    np.testing.assert_allclose(rv, [0.9 * 1.0 + 0.1 * 4.0])  # unbiased: 3 * 4/3


def test_update_running_stats_returns_new_arrays():
    rm, rv = np.zeros(2), np.ones(2)
    new_rm, new_rv = bnp.update_running_stats(rm, rv, np.ones(2), np.ones(2), m=4)
    assert new_rm is not rm and new_rv is not rv
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)


def test_to_2d_puts_one_example_per_row_and_back():
    x = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    x2 = bnp.to_2d(x)
    assert x2.shape == (8, 3)
    np.testing.assert_array_equal(x2[:, 1], x[:, 1, :].reshape(-1))
    np.testing.assert_array_equal(bnp.from_2d(x2, x.shape), x)


# ---------------------------------------------------------------------------------------------
# Backward passes: staged and compact agree, and match finite differences.
# ---------------------------------------------------------------------------------------------


def _problem(seed: int, m: int = 6, c: int = 3, eps: float = 1e-5):
    rng = np.random.default_rng(seed)
    x = rng.normal(1, 2, size=(m, c))
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    dy = rng.normal(size=(m, c))
    return x, gamma, beta, dy, eps


@pytest.mark.parametrize("backward", [bnp.backward_staged, bnp.backward_compact])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_backward_matches_finite_differences(backward, seed):
    x, gamma, beta, dy, eps = _problem(seed)
    _, cache = bnp.forward_train(x, gamma, beta, eps)
    dx, dgamma, dbeta = backward(dy, cache)

    def f(x, gamma, beta):
        return bnp.forward_train(x, gamma, beta, eps)[0]

    report = check_gradients(f, {"x": x, "gamma": gamma, "beta": beta}, dy,
                             {"x": dx, "gamma": dgamma, "beta": dbeta})
    assert report.ok, str(report)


def test_staged_and_compact_backward_agree():
    x, gamma, beta, dy, eps = _problem(3, m=17, c=5, eps=0.1)
    _, cache = bnp.forward_train(x, gamma, beta, eps)
    for a, b in zip(bnp.backward_staged(dy, cache), bnp.backward_compact(dy, cache), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_eval_backward_matches_finite_differences():
    x, gamma, beta, dy, eps = _problem(4)
    rm, rv = np.array([0.5, -1.0, 2.0]), np.array([0.3, 2.0, 1.5])
    _, cache = bnp.forward_eval(x, gamma, beta, rm, rv, eps)
    dx, dgamma, dbeta = bnp.backward_eval(dy, cache)

    def f(x, gamma, beta):
        return bnp.forward_eval(x, gamma, beta, rm, rv, eps)[0]

    report = check_gradients(f, {"x": x, "gamma": gamma, "beta": beta}, dy,
                             {"x": dx, "gamma": dgamma, "beta": dbeta})
    assert report.ok, str(report)


def test_training_dx_sums_to_zero_over_the_batch():
    # the mean's path removes any common shift: sum_i dx_i = 0 per feature
    x, gamma, beta, dy, eps = _problem(5)
    _, cache = bnp.forward_train(x, gamma, beta, eps)
    dx, _, _ = bnp.backward_compact(dy, cache)
    np.testing.assert_allclose(dx.sum(axis=0), 0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The layer's semantics, one at a time.
# ---------------------------------------------------------------------------------------------


def _x(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(1, 2, size=shape).astype(dtype)


def test_layer_defaults_match_pytorch():
    layer = bnp.BatchNorm1d(4)
    assert (layer.eps, layer.momentum, layer.affine, layer.track_running_stats) == (1e-5, 0.1, True, True)
    assert layer.training and layer.dtype == np.float32
    np.testing.assert_array_equal(layer.gamma, 1)
    np.testing.assert_array_equal(layer.beta, 0)
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert layer.num_batches_tracked == 0
    assert repr(layer) == repr(nn.BatchNorm1d(4))


def test_eval_mode_ignores_the_batch():
    layer = bnp.BatchNorm1d(3, dtype=np.float64)
    layer.running_mean = np.array([1.0, 2.0, 3.0])
    layer.running_var = np.array([4.0, 1.0, 0.25])
    layer.eval()
    x = _x(5, 3)
    alone = layer(x[:1])
    together = layer(x)[:1]
    np.testing.assert_array_equal(alone, together)
    expected = (x[:1] - layer.running_mean) / np.sqrt(layer.running_var + 1e-5)
    np.testing.assert_allclose(alone, expected, rtol=1e-14)


def test_train_mode_output_depends_on_batch_mates():
    layer = bnp.BatchNorm1d(3, dtype=np.float64)
    x = _x(6, 3)
    first = layer(x[:3])[0]
    second = layer(np.concatenate([x[:1], x[3:]]))[0]
    assert not np.allclose(first, second)


def test_repeated_eval_passes_are_identical_and_change_nothing():
    layer = bnp.BatchNorm1d(3, dtype=np.float64)
    layer(_x(8, 3))
    layer.eval()
    before = layer.state_dict()
    x = _x(4, 3, seed=1)
    a, b = layer(x), layer(x)
    np.testing.assert_array_equal(a, b)
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_momentum_none_is_the_cumulative_average():
    layer = bnp.BatchNorm1d(2, momentum=None, dtype=np.float64)
    xs = [_x(5, 2, seed=s) for s in range(4)]
    for x in xs:
        layer(x)
    np.testing.assert_allclose(layer.running_mean, np.mean([x.mean(0) for x in xs], axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, np.mean([x.var(0, ddof=1) for x in xs], axis=0), rtol=1e-12)
    assert layer.num_batches_tracked == 4


def test_three_d_input_reduces_over_n_and_l_with_unbiased_factor_n_times_l():
    layer = bnp.BatchNorm1d(2, momentum=1.0, dtype=np.float64)
    x = _x(3, 2, 5)
    y = layer(x)
    per_feature = x.transpose(1, 0, 2).reshape(2, -1)
    np.testing.assert_allclose(layer.running_mean, per_feature.mean(1), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, per_feature.var(1, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(y.transpose(1, 0, 2).reshape(2, -1).var(1), 1, rtol=1e-4)


def test_track_running_stats_false_uses_batch_statistics_in_eval():
    layer = bnp.BatchNorm1d(3, track_running_stats=False, dtype=np.float64).eval()
    assert layer.running_mean is None and layer.running_var is None and layer.num_batches_tracked is None
    y = layer(_x(10, 3))
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-12)
    assert set(layer.state_dict()) == {"weight", "bias"}


def test_affine_false_has_no_parameters_or_their_gradients():
    layer = bnp.BatchNorm1d(3, affine=False, dtype=np.float64)
    layer(_x(6, 3))
    layer.backward(_x(6, 3, seed=2))
    assert layer.gamma is None and layer.beta is None
    assert layer.dgamma is None and layer.dbeta is None
    assert "weight" not in layer.state_dict()


def test_reset_running_stats_and_reset_parameters():
    layer = bnp.BatchNorm1d(3, dtype=np.float64)
    layer(_x(6, 3))
    layer.gamma = layer.gamma * 3
    layer.reset_running_stats()
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert layer.num_batches_tracked == 0
    np.testing.assert_array_equal(layer.gamma, 3)
    layer.reset_parameters()
    np.testing.assert_array_equal(layer.gamma, 1)


def test_empty_batch_gives_empty_output_and_keeps_statistics():
    ref = nn.BatchNorm1d(3, dtype=torch.float64)
    layer = bnp.BatchNorm1d(3, dtype=np.float64)
    layer.running_mean = np.array([1.0, 2.0, 3.0])
    ref.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    for shape in [(0, 3), (0, 3, 4), (2, 3, 0)]:
        y = layer(np.zeros(shape))
        ref(torch.zeros(shape, dtype=torch.float64))
        assert y.shape == shape
    np.testing.assert_array_equal(layer.running_mean, ref.running_mean.numpy())
    assert layer.num_batches_tracked == int(ref.num_batches_tracked)


def test_non_contiguous_input_gives_the_same_result():
    layer = bnp.BatchNorm1d(4, dtype=np.float64)
    x = _x(4, 8)
    strided = x.T  # (8, 4), not C-contiguous
    assert not strided.flags.c_contiguous
    y1 = layer(strided)
    layer.reset_running_stats()
    y2 = layer(np.ascontiguousarray(strided))
    np.testing.assert_allclose(y1, y2, rtol=1e-13, atol=1e-13)


def test_float16_input_is_computed_in_float32_and_returned_as_float16():
    layer = bnp.BatchNorm1d(3)
    x = _x(8, 3).astype(np.float16)
    y = layer(x)
    assert y.dtype == np.float16 and layer.running_mean.dtype == np.float32
    expected = (x.astype(np.float32) - x.astype(np.float32).mean(0)) / np.sqrt(x.astype(np.float32).var(0) + 1e-5)
    np.testing.assert_allclose(y.astype(np.float32), expected, atol=2e-3)


def test_backward_after_eval_forward_is_the_frozen_gradient():
    layer = bnp.BatchNorm1d(3, dtype=np.float64)
    layer.gamma = np.array([2.0, -1.0, 0.5])
    layer.running_var = np.array([3.0, 0.5, 1.0])
    layer.eval()
    layer(_x(5, 3))
    dy = _x(5, 3, seed=3)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, dy * layer.gamma / np.sqrt(layer.running_var + 1e-5), rtol=1e-14)


def test_backward_before_forward_says_so():
    with pytest.raises(RuntimeError, match="forward"):
        bnp.BatchNorm1d(3).backward(np.zeros((2, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error, and the layer exactly as it was.
# ---------------------------------------------------------------------------------------------

BAD_INPUTS = [
    (np.zeros((1, 3)), ValueError, "Expected more than 1 value per channel when training"),
    (np.zeros((1, 3, 1)), ValueError, "Expected more than 1 value per channel when training"),
    (np.zeros((4, 5)), ValueError, "expected input with 3 features"),
    (np.zeros(3), ValueError, r"expected 2D or 3D input \(got 1D input\)"),
    (np.zeros((2, 3, 4, 5)), ValueError, r"expected 2D or 3D input \(got 4D input\)"),
    (np.zeros((4, 3), dtype=np.int64), TypeError, "floating-point"),
    (np.zeros((4, 3), dtype=np.complex128), TypeError, "floating-point"),
    (np.zeros((4, 3), dtype=np.float32), TypeError, "does not match the layer's float64"),
]


@pytest.mark.parametrize("x, error, message", BAD_INPUTS,
                         ids=lambda v: getattr(v, "shape", None) and str(v.shape) + str(v.dtype))
def test_bad_input_raises_and_leaves_state_unchanged(x, error, message):
    layer = bnp.BatchNorm1d(3, dtype=np.float64)
    layer(_x(6, 3))
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    with pytest.raises(error, match=message):
        layer(x)
    after = layer.state_dict()
    assert list(after) == list(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_one_value_per_channel_is_fine_in_eval():
    layer = bnp.BatchNorm1d(3, dtype=np.float64).eval()
    assert layer(np.zeros((1, 3))).shape == (1, 3)


def test_nonpositive_eps_is_rejected_in_training():
    layer = bnp.BatchNorm1d(3, eps=0.0, dtype=np.float64)
    with pytest.raises(ValueError, match="eps"):
        layer(_x(4, 3))
    assert layer.num_batches_tracked == 0


def test_bad_dtype_for_the_layer_is_rejected():
    with pytest.raises(TypeError, match="dtype"):
        bnp.BatchNorm1d(3, dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# State dicts: what they refuse (their keys and their moves to and from PyTorch: the conformance suite).
# ---------------------------------------------------------------------------------------------


def test_load_state_dict_rejects_missing_keys_and_changes_nothing():
    layer = bnp.BatchNorm1d(3, dtype=np.float64)
    state = layer.state_dict()
    del state["running_var"]
    state["weight"] = np.full(3, 5.0)
    with pytest.raises(KeyError, match="running_var"):
        layer.load_state_dict(state)
    np.testing.assert_array_equal(layer.gamma, 1)


def test_load_state_dict_rejects_wrong_shapes():
    layer = bnp.BatchNorm1d(3)
    state = layer.state_dict()
    state["bias"] = np.zeros(4)
    with pytest.raises(ValueError, match="bias"):
        layer.load_state_dict(state)


def test_state_dict_returns_copies():
    layer = bnp.BatchNorm1d(3)
    layer.state_dict()["running_mean"][:] = 7
    np.testing.assert_array_equal(layer.running_mean, 0)


def test_forward_output_matches_the_equations_composed():
    layer = bnp.BatchNorm1d(3, eps=0.1, dtype=np.float64)
    layer.gamma, layer.beta = np.array([1.0, 2.0, -1.0]), np.array([0.0, 1.0, 3.0])
    x = _x(7, 3)
    mu = bnp.batch_mean(x)
    expected = bnp.scale_shift(bnp.normalize(x, mu, bnp.batch_var(x, mu), 0.1), layer.gamma, layer.beta)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-14, atol=1e-14)
