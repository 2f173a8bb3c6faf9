"""bnlib.fused_numpy: batch norm in cache-sized blocks (its numbers against PyTorch's: tests/test_conformance.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnlib.fused_numpy as fnp
import bnlib.numpy as bnp


def test_fused_layer_computes_in_its_own_dtype():
    layer = fnp.BatchNorm1d(3)
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    assert layer._cache.mu.dtype == np.float32  # not the float64 of bnlib.numpy's layer


# ---------------------------------------------------------------------------------------------
# The kernels: blocks, statistics, out=.
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 50),
    c=st.integers(1, 5),
    block_bytes=st.integers(1, 400),
    seed=st.integers(0, 2**31),
)
def test_batch_stats_equal_the_two_pass_statistics_for_any_blocking(m, c, block_bytes, seed):
    x = np.random.default_rng(seed).normal(3.0, 2.0, size=(m, c))
    mu, var = fnp.batch_stats(x, block_bytes=block_bytes)
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, x.var(axis=0), rtol=1e-10, atol=1e-12)


def test_merge_stats_is_the_law_of_total_variance():
    # blocks [1, 3] and [5]: means 2 and 5, M2 = 2 and 0; all: mean 3, var ((4 + 0 + 4) / 3)
    mu, var = fnp.merge_stats([2, 1], np.array([[2.0], [5.0]]), np.array([[2.0], [0.0]]))
    np.testing.assert_allclose(mu, [3.0])
    np.testing.assert_allclose(var, [8.0 / 3.0])


def test_batch_stats_do_not_cancel_when_the_mean_dwarfs_the_spread():
    rng = np.random.default_rng(0)
    x = (1e4 + rng.normal(size=(65536, 4))).astype(np.float32)
    _, var = fnp.batch_stats(x)
    exact = x.astype(np.float64).var(axis=0)
    naive = (x * x).mean(axis=0) - x.mean(axis=0) ** 2  # E[x²] - E[x]² in float32
    assert np.max(np.abs(var - exact) / exact) < 1e-4
    assert np.max(np.abs(naive - exact) / exact) > 1e-2  # the formula the blocks avoid


@pytest.mark.parametrize("block_bytes", [1, 64, 10**9])
def test_kernels_match_the_staged_equations_for_any_block_size(block_bytes):
    rng = np.random.default_rng(1)
    x, dy = rng.normal(2.0, 0.5, size=(37, 5)), rng.normal(size=(37, 5))
    gamma, beta = rng.uniform(0.5, 2, 5), rng.normal(size=5)
    y, cache = fnp.forward_train(x, gamma, beta, 1e-3, block_bytes=block_bytes)
    dx, dgamma, dbeta = fnp.backward_train(dy, cache, block_bytes=block_bytes)
    y_ref, cache_ref = bnp.forward_train(x, gamma, beta, 1e-3)
    for got, want in zip((y, dx, dgamma, dbeta), (y_ref, *bnp.backward_compact(dy, cache_ref)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_forward_writes_into_out():
    x = np.random.default_rng(2).normal(size=(10, 3))
    out = np.empty_like(x)
    y, _ = fnp.forward_train(x, np.ones(3), np.zeros(3), out=out)
    assert y is out
    np.testing.assert_allclose(out, bnp.forward_train(x, np.ones(3), np.zeros(3))[0], atol=1e-12)


def test_backward_can_overwrite_dy_with_dx():
    rng = np.random.default_rng(3)
    x, dy = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    _, cache = fnp.forward_train(x, rng.uniform(0.5, 2, 4), rng.normal(size=4), block_bytes=64)
    want = fnp.backward_train(dy.copy(), cache, block_bytes=64)[0]
    got, _, _ = fnp.backward_train(dy, cache, out=dy, block_bytes=64)
    assert got is dy
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_forward_refuses_to_overwrite_x():
    x = np.random.default_rng(4).normal(size=(6, 2))
    with pytest.raises(ValueError, match="must not overlap x"):
        fnp.forward_train(x, np.ones(2), np.zeros(2), out=x)


def test_out_of_the_wrong_shape_is_rejected():
    x = np.zeros((6, 2))
    with pytest.raises(ValueError, match="out must have x's shape"):
        fnp.forward_train(x, np.ones(2), np.zeros(2), out=np.empty((6, 3)))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_give_the_same_numbers_bit_for_bit(threads):
    rng = np.random.default_rng(5)
    x, dy = rng.normal(1.0, 2.0, size=(300, 7)).astype(np.float32), rng.normal(size=(300, 7)).astype(np.float32)
    gamma, beta = np.ones(7, np.float32), np.zeros(7, np.float32)
    one = fnp.forward_train(x, gamma, beta, block_bytes=256, threads=1)
    many = fnp.forward_train(x, gamma, beta, block_bytes=256, threads=threads)
    np.testing.assert_array_equal(one[0], many[0])
    for a, b in zip(fnp.backward_train(dy, one[1], block_bytes=256, threads=1),
                    fnp.backward_train(dy, many[1], block_bytes=256, threads=threads), strict=True):
        np.testing.assert_array_equal(a, b)


def test_rows_per_block_fill_the_block_and_never_drop_to_zero():
    assert fnp.rows_per_block(np.empty((10, 256), np.float32), 1024 * 1024) == 1024
    assert fnp.rows_per_block(np.empty((10, 10**6), np.float32), 1024) == 1
