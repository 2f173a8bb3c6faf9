"""bnlib.fused_torch: plain forward and backward functions, compiled into four loops.

Its numbers against PyTorch's, eager and compiled: tests/test_conformance.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlib.fused_torch as ft

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@pytest.mark.parametrize("fn, args", [
    (ft.forward_train, lambda x, g: (x, g, g, 1e-5)),
    (ft.backward_train, lambda x, g: (x, x, g, g, g)),
], ids=["forward", "backward"])
def test_each_pass_compiles_into_one_graph_without_breaks(fn, args, inductor_cache):
    x, g = torch.randn(32, 8), torch.rand(8) + 0.5
    explanation = torch._dynamo.explain(fn)(*args(x, g))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("n", [512, 200, 64], ids=["grouped", "ragged", "small"])
def test_batch_sums_are_the_sums_over_the_batch(n):
    a, b = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 5, dtype=torch.float64)
    got = ft.batch_sums(a, a * b)
    torch.testing.assert_close(got[0], a.sum(0))
    torch.testing.assert_close(got[1], (a * b).sum(0))


def test_statistics_stay_accurate_when_the_mean_dwarfs_the_spread():
    x = (1e4 + torch.randn(4096, 3, dtype=torch.float64)).float()
    _, mu, var, _ = ft.forward_train(x, None, None, 1e-5)
    exact = x.double().var(0, correction=0)
    assert ((var.double() - exact).abs() / exact).max() < 1e-4
    torch.testing.assert_close(mu.double(), x.double().mean(0), rtol=1e-7, atol=0)


def test_backward_keeps_only_x_and_per_feature_tensors():
    layer = ft.BatchNorm1d(8, compiled=False)
    x = torch.randn(64, 8, requires_grad=True)
    y = layer(x)
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    big = [t for t in saved if t.numel() == x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr()  # x itself, not a copy nor x_hat
    assert all(t.shape == (8,) for t in saved if t.numel() != x.numel())


def test_half_precision_input_uses_float32_statistics():
    x = (torch.randn(64, 4) * 0.01 + 100).half()
    ours, ref = ft.BatchNorm1d(4, compiled=False), nn.BatchNorm1d(4)
    y_ours, y_ref = ours(x), ref(x)
    assert y_ours.dtype == torch.float16
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_compiled_passes_write_into_the_given_output(inductor_cache):
    x, g = torch.randn(256, 8) * 2 + 3, torch.rand(8) + 0.5
    dy = torch.randn_like(x)
    y_out, dx_out = torch.empty_like(x), torch.empty_like(x)
    explanation = torch._dynamo.explain(ft.forward_train)(x, g, g, 1e-5, y_out)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
    y, mu, _, istd = ft.compile_once(ft.forward_train)(x, g, g, 1e-5, y_out)
    dx, _, _ = ft.compile_once(ft.backward_train)(dy, x, g, mu, istd, dx_out)
    assert y.data_ptr() == y_out.data_ptr() and dx.data_ptr() == dx_out.data_ptr()
    y_new, *_ = ft.forward_train(x, g, g, 1e-5)
    dx_new, *_ = ft.backward_train(dy, x, g, mu, istd)
    torch.testing.assert_close(y_out, y_new)
    torch.testing.assert_close(dx_out, dx_new)


def _double(x):
    return x * 2


def test_compiled_functions_keep_their_own_recompile_limit_whatever_the_global_one(inductor_cache):
    torch._dynamo.reset()  # the session's earlier compilations count towards dynamo's global cap
    compiled = ft.compile_once(_double)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    # With the global limit at 1, a plain torch.compile would run the second and third ranks eagerly.
    with torch._dynamo.config.patch(recompile_limit=1):
        for rank in (1, 2, 3):
            x = torch.ones((2,) * rank)
            torch.testing.assert_close(compiled(x), 2 * x)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 3
    assert ft.RECOMPILE_LIMIT > 3
