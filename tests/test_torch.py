"""bnlib.torch: a drop-in for torch.nn.BatchNorm1d whose forward and backward are written by hand.

Its numbers against PyTorch's, on the CPU and on a GPU: tests/test_conformance.py.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import bnlib.torch as bnt

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# ---------------------------------------------------------------------------------------------
# A drop-in: constructor, parameters, buffers, repr, state_dict.
# ---------------------------------------------------------------------------------------------

OPTIONS = [
    {},
    {"affine": False},
    {"track_running_stats": False},
    {"bias": False},
    {"momentum": None, "eps": 1e-3},
    {"affine": False, "track_running_stats": False},
]


def test_constructor_signature_is_pytorchs():
    ours = inspect.signature(bnt.BatchNorm1d.__init__).parameters
    theirs = inspect.signature(nn.BatchNorm1d.__init__).parameters
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].default == theirs[name].default, name
        assert ours[name].kind == theirs[name].kind, name


@pytest.mark.parametrize("kwargs", OPTIONS, ids=str)
def test_parameters_buffers_and_repr_are_pytorchs(kwargs):
    ours, theirs = bnt.BatchNorm1d(5, **kwargs), nn.BatchNorm1d(5, **kwargs)
    assert repr(ours) == repr(theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name
    for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
        assert getattr(ours, attr) == getattr(theirs, attr)


def test_old_state_dict_without_num_batches_tracked_loads_as_pytorch():
    state = nn.BatchNorm1d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    ours = bnt.BatchNorm1d(3)
    ours.load_state_dict(state)
    assert int(ours.num_batches_tracked) == 0


def test_dtype_and_device_arguments_place_parameters_and_buffers():
    layer = bnt.BatchNorm1d(3, dtype=torch.float64, device="cpu")
    assert layer.weight.dtype == layer.running_var.dtype == torch.float64
    assert layer.num_batches_tracked.dtype == torch.long
    assert layer.weight.device.type == "cpu"


def test_module_to_moves_and_casts_like_any_module():
    layer = bnt.BatchNorm1d(3).double()
    assert layer.running_mean.dtype == torch.float64 and layer.num_batches_tracked.dtype == torch.long
    y = layer(torch.randn(4, 3, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_reset_running_stats_and_reset_parameters():
    layer = bnt.BatchNorm1d(3)
    layer(torch.randn(6, 3) + 2)
    with torch.no_grad():
        layer.weight.mul_(3)
    layer.reset_running_stats()
    assert torch.equal(layer.running_mean, torch.zeros(3)) and torch.equal(layer.running_var, torch.ones(3))
    assert int(layer.num_batches_tracked) == 0
    assert torch.equal(layer.weight, torch.full((3,), 3.0))
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(3)) and torch.equal(layer.bias, torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# Hand-written: never PyTorch's batch norm, and gradients that pass gradcheck.
# ---------------------------------------------------------------------------------------------


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_never_calls_a_builtin_batch_norm(shape, training, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("bnlib.torch called PyTorch's own batch norm")

    for module, name in [(torch.nn.functional, "batch_norm"), (torch, "batch_norm"),
                         (torch, "native_batch_norm")]:
        monkeypatch.setattr(module, name, forbidden)
    layer = bnt.BatchNorm1d(3).train(training)
    x = torch.randn(*shape, requires_grad=True)
    with _RecordOps() as recorder:
        layer(x).backward(torch.randn(*shape))
    assert recorder.ops, "the dispatch recorder saw nothing"
    assert not [op for op in recorder.ops if "norm" in op], recorder.ops


@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_training_function_passes_gradcheck(shape, affine):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    gamma = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_() if affine else None
    beta = torch.randn(3, dtype=torch.float64, requires_grad=True) if affine else None

    def y(x, gamma=None, beta=None):
        return bnt.BatchNormFunction.apply(x, gamma, beta, 1e-3)[0]

    inputs = (x, gamma, beta) if affine else (x,)
    assert torch.autograd.gradcheck(y, inputs, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 4)])
def test_eval_function_passes_gradcheck(shape):
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    gamma = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    beta = torch.randn(3, dtype=torch.float64, requires_grad=True)
    mu, var = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5

    def y(x, gamma, beta):
        return bnt.FrozenBatchNormFunction.apply(x, gamma, beta, mu, var, 1e-5)

    assert torch.autograd.gradcheck(y, (x, gamma, beta), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("training", [True, False])
def test_layer_gradients_pass_gradcheck(training):
    torch.manual_seed(2)
    layer = bnt.BatchNorm1d(3, dtype=torch.float64).train(training)
    with torch.no_grad():
        layer.running_mean.copy_(torch.randn(3))
        layer.running_var.copy_(torch.rand(3) + 0.5)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    buffers = {k: v.clone() for k, v in layer.named_buffers()}

    def y(x):
        with torch.no_grad():  # each call from the same running statistics
            for k, v in layer.named_buffers():
                v.copy_(buffers[k])
        return layer(x)

    assert torch.autograd.gradcheck(y, (x,), eps=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# Semantics: modes, empty and strided batches, half precision, bad input.
# ---------------------------------------------------------------------------------------------


def test_eval_mode_ignores_the_batch():
    layer = bnt.BatchNorm1d(3, dtype=torch.float64)
    layer(torch.randn(8, 3, dtype=torch.float64) * 2 + 1)
    layer.eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(layer(x[:1]), layer(x)[:1])


def test_repeated_eval_passes_are_identical_and_change_nothing():
    layer = bnt.BatchNorm1d(3)
    layer(torch.randn(8, 3))
    layer.eval()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(4, 3)
    assert torch.equal(layer(x), layer(x))
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_momentum_none_is_the_cumulative_average():
    layer = bnt.BatchNorm1d(2, momentum=None, dtype=torch.float64)
    xs = [torch.randn(5, 2, dtype=torch.float64) * (i + 1) for i in range(4)]
    for x in xs:
        layer(x)
    torch.testing.assert_close(layer.running_mean, torch.stack([x.mean(0) for x in xs]).mean(0))
    torch.testing.assert_close(layer.running_var, torch.stack([x.var(0) for x in xs]).mean(0))


def test_empty_batch_gives_empty_output_like_pytorch():
    ours, theirs = bnt.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        ours.running_mean.fill_(2.0)
        theirs.running_mean.fill_(2.0)
    for shape in [(0, 3), (0, 3, 4), (2, 3, 0)]:
        x = torch.zeros(shape, requires_grad=True)
        y = ours(x)
        assert y.shape == shape
        y.sum().backward()
        theirs(torch.zeros(shape))
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k


def test_non_contiguous_input_matches_pytorch():
    ours, theirs = bnt.BatchNorm1d(4, dtype=torch.float64), nn.BatchNorm1d(4, dtype=torch.float64)
    x = torch.randn(4, 5, 8, dtype=torch.float64).transpose(0, 2)[:, :, ::2]  # (8, 5, 4) -> strided
    x = x[:, :4, :].transpose(1, 2).transpose(1, 2)
    assert not x.is_contiguous()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_input_uses_float32_statistics(half):
    ours, theirs = bnt.BatchNorm1d(3), nn.BatchNorm1d(3)
    x = (torch.randn(64, 3) * 2 + 3).to(half)
    xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, yt = ours(xo), theirs(xt)
    assert yo.dtype == half and ours.running_mean.dtype == torch.float32
    dy = torch.randn(64, 3).to(half)
    yo.backward(dy)
    yt.backward(dy)
    tol = {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(yo.float(), yt.float(), **tol)
    torch.testing.assert_close(xo.grad.float(), xt.grad.float(), **tol)
    assert ours.weight.grad.dtype == torch.float32
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-4, atol=1e-4)


BAD_INPUTS = [
    (torch.zeros(1, 3), ValueError, "Expected more than 1 value per channel when training"),
    (torch.zeros(1, 3, 1), ValueError, "Expected more than 1 value per channel when training"),
    (torch.zeros(4, 5), ValueError, "expected input with 3 features"),
    (torch.zeros(3), ValueError, r"expected 2D or 3D input \(got 1D input\)"),
    (torch.zeros(2, 3, 4, 5), ValueError, r"expected 2D or 3D input \(got 4D input\)"),
    (torch.zeros(4, 3, dtype=torch.long), TypeError, "floating-point"),
    (torch.zeros(4, 3, dtype=torch.float64), TypeError, "does not match the layer's torch.float32"),
]


@pytest.mark.parametrize("x, error, message", BAD_INPUTS,
                         ids=lambda v: f"{tuple(v.shape)}-{v.dtype}" if torch.is_tensor(v) else None)
def test_bad_input_raises_and_leaves_state_unchanged(x, error, message):
    layer = bnt.BatchNorm1d(3)
    layer(torch.randn(6, 3))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(error, match=message):
        layer(x)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"


def test_one_value_per_channel_is_fine_in_eval():
    assert bnt.BatchNorm1d(3).eval()(torch.zeros(1, 3)).shape == (1, 3)


def test_one_value_per_channel_is_rejected_in_eval_without_running_stats():
    with pytest.raises(ValueError, match="more than 1 value"):
        bnt.BatchNorm1d(3, track_running_stats=False).eval()(torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------
# CUDA: the same code on a GPU (skipped without one; the paths above cover the CPU).
# ---------------------------------------------------------------------------------------------


@CUDA
@pytest.mark.cuda
def test_cuda_half_precision_uses_float32_statistics():
    layer = bnt.BatchNorm1d(8, device="cuda")
    y = layer(torch.randn(32, 8, device="cuda", dtype=torch.float16))
    assert y.dtype == torch.float16 and layer.running_mean.dtype == torch.float32
