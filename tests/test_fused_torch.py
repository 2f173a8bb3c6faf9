"""bnlib.fused_torch: plain forward and backward functions, compiled into four loops; nn.BatchNorm1d's numbers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from reference import DTYPES, Config, assert_same_steps, play_from_torch_start, run_side_by_side
from test_numpy import configs
from torch import nn

import bnlib.fused_torch as ft

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def fused_steps(cfg: Config, compiled: bool):
    """Play ``cfg`` on the fused layer, from the start state run_side_by_side gives nn.BatchNorm1d."""
    layer = ft.BatchNorm1d(cfg.c, **cfg.kwargs(), dtype=DTYPES[cfg.dtype][1], compiled=compiled)
    return play_from_torch_start(layer, cfg)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs("float64"))
def test_eager_fused_layer_matches_pytorch_float64(cfg):
    want = run_side_by_side(cfg)["torch.nn"]
    assert_same_steps(fused_steps(cfg, compiled=False), want, rtol=1e-10, name="fused_torch", eps=cfg.eps)


@settings(max_examples=20, deadline=None)
@given(configs("float32"))
def test_eager_fused_layer_matches_pytorch_float32(cfg):
    want = run_side_by_side(cfg)["torch.nn"]
    assert_same_steps(fused_steps(cfg, compiled=False), want, rtol=2e-5, name="fused_torch", eps=cfg.eps)


# Compiling takes seconds per variant (dtype, rank, affine): a few representative ones.
COMPILED = [
    Config(n=64, c=16, dtype="float32"),
    Config(n=512, c=8, dtype="float32", train_steps=2),  # rows in groups (batch_sums)
    Config(n=9, c=5, length=7, dtype="float32", momentum=None, eps=1e-3),
    Config(n=33, c=4, dtype="float64", affine=False),
    Config(n=12, c=3, dtype="float32", bias=False, track_running_stats=False),
]


@pytest.mark.parametrize("cfg", COMPILED, ids=lambda c: f"{c.shape}-{c.dtype}-affine{c.affine}-bias{c.bias}")
def test_compiled_fused_layer_matches_pytorch(cfg, inductor_cache):
    want = run_side_by_side(cfg)["torch.nn"]
    rtol = 1e-10 if cfg.dtype == "float64" else 2e-5
    assert_same_steps(fused_steps(cfg, compiled=True), want, rtol=rtol, name="fused_torch", eps=cfg.eps)


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
