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
# BatchNorm2d, LayerNorm, GroupNorm: drop-ins, by hand (tests/test_conformance.py plays them
# against PyTorch step by step; here what is specific to each).
# ---------------------------------------------------------------------------------------------

FAMILY = {"BatchNorm2d": (3,), "LayerNorm": ((3, 4),), "GroupNorm": (2, 6)}
FAMILY_OPTIONS = {
    "BatchNorm2d": [{}, {"affine": False}, {"track_running_stats": False}, {"bias": False, "momentum": None}],
    "LayerNorm": [{}, {"elementwise_affine": False}, {"bias": False, "eps": 1e-3}],
    "GroupNorm": [{}, {"affine": False}, {"bias": False, "eps": 1e-3}],
}


@pytest.mark.parametrize("kind", FAMILY)
def test_family_constructor_signatures_are_pytorchs(kind):
    ours = inspect.signature(getattr(bnt, kind).__init__).parameters
    theirs = inspect.signature(getattr(nn, kind).__init__).parameters
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].default == theirs[name].default, name
        assert ours[name].kind == theirs[name].kind, name


@pytest.mark.parametrize("kind, kwargs", [(k, o) for k in FAMILY for o in FAMILY_OPTIONS[k]], ids=str)
def test_family_parameters_buffers_and_repr_are_pytorchs(kind, kwargs):
    ours, theirs = getattr(bnt, kind)(*FAMILY[kind], **kwargs), getattr(nn, kind)(*FAMILY[kind], **kwargs)
    assert repr(ours) == repr(theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name
    for attr in theirs.__constants__:
        assert getattr(ours, attr) == getattr(theirs, attr), attr


@pytest.mark.parametrize("shape", [4, (4,), [3, 4], torch.Size([3, 4])], ids=str)
def test_layer_norm_takes_an_int_or_a_sequence_as_normalized_shape(shape):
    ours, theirs = bnt.LayerNorm(shape), nn.LayerNorm(shape)
    assert ours.normalized_shape == theirs.normalized_shape
    assert ours.weight.shape == theirs.weight.shape


def test_group_norm_rejects_groups_that_do_not_divide_the_channels_as_pytorch():
    with pytest.raises(ValueError) as theirs:
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"num_channels \(6\) must be divisible by num_groups \(4\)") as ours:
        bnt.GroupNorm(4, 6)
    assert str(ours.value) == str(theirs.value)


def test_batch_norm_2d_loads_an_old_state_dict_without_num_batches_tracked():
    state = nn.BatchNorm2d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    ours = bnt.BatchNorm2d(3)
    ours.load_state_dict(state)
    assert int(ours.num_batches_tracked) == 0


#: (layer, its arguments, bad input): PyTorch raises the same error type with the same message.
FAMILY_BAD_INPUTS = [
    ("BatchNorm2d", (3,), torch.zeros(2, 3, 4)),
    ("BatchNorm2d", (3,), torch.zeros(1, 3, 1, 1)),
    ("LayerNorm", ((3, 4),), torch.zeros(2, 4, 3)),
    ("LayerNorm", ((3, 4),), torch.zeros(4)),
    ("GroupNorm", (2, 6), torch.zeros(6)),
    ("GroupNorm", (2, 6), torch.zeros(2, 4, 3)),
    ("GroupNorm", (2, 2), torch.zeros(1, 2)),
]


def _raised(f) -> BaseException:
    try:
        f()
    except Exception as error:  # noqa: BLE001 - the error itself is what is compared
        return error
    raise AssertionError("no error was raised")


@pytest.mark.parametrize("kind, args, x", FAMILY_BAD_INPUTS,
                         ids=[f"{k}-{tuple(x.shape)}" for k, _, x in FAMILY_BAD_INPUTS])
def test_family_bad_input_raises_pytorchs_error(kind, args, x):
    ours = _raised(lambda: getattr(bnt, kind)(*args)(x))
    theirs = _raised(lambda: getattr(nn, kind)(*args)(x))
    assert type(ours) is type(theirs), f"{type(ours).__name__}: {ours} (PyTorch: {type(theirs).__name__})"
    assert str(ours) == str(theirs)


@pytest.mark.parametrize("kind", ["LayerNorm", "GroupNorm"])
def test_family_input_of_another_precision_is_rejected(kind):
    with pytest.raises(TypeError, match="does not match the layer's torch.float32"):
        getattr(bnt, kind)(*FAMILY[kind])(torch.zeros(2, 6, 3, 4, dtype=torch.float64))


def _family_input(kind: str, shape=(2, 6, 3, 4)) -> torch.Tensor:
    return torch.randn(shape[:2] + (3, 4) if kind == "LayerNorm" else shape) * 3 + 1


@pytest.mark.parametrize("kind", FAMILY)
@pytest.mark.parametrize("training", [True, False])
def test_family_never_calls_a_builtin_norm(kind, training, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("bnlib.torch called one of PyTorch's own normalizations")

    for module, name in [(torch.nn.functional, "batch_norm"), (torch.nn.functional, "layer_norm"),
                         (torch.nn.functional, "group_norm"), (torch, "batch_norm"), (torch, "layer_norm"),
                         (torch, "group_norm"), (torch, "native_batch_norm"), (torch, "native_layer_norm")]:
        monkeypatch.setattr(module, name, forbidden)
    channels = 3 if kind == "BatchNorm2d" else 6
    layer = getattr(bnt, kind)(*FAMILY[kind]).train(training)
    x = _family_input(kind, (2, channels, 3, 4)).requires_grad_()
    with _RecordOps() as recorder:
        layer(x).backward(torch.randn_like(x))
    assert recorder.ops, "the dispatch recorder saw nothing"
    assert not [op for op in recorder.ops if "norm" in op], recorder.ops


@pytest.mark.parametrize("function, extra, shape", [
    (bnt.LayerNormFunction, 2, (3, 2, 4)),
    (bnt.GroupNormFunction, 3, (2, 6, 2, 2)),
    (bnt.GroupNormFunction, 2, (3, 4)),
], ids=["layer-norm", "group-norm-4d", "group-norm-2d"])
def test_family_functions_pass_gradcheck(function, extra, shape):
    torch.manual_seed(0)
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 1).requires_grad_()
    param_shape = shape[1:] if function is bnt.LayerNormFunction else (shape[1],)
    gamma = torch.randn(param_shape, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(param_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, g, b: function.apply(x, g, b, extra, 1e-3), (x, gamma, beta))


@pytest.mark.parametrize("kind", ["LayerNorm", "GroupNorm"])
def test_family_statistics_are_each_examples_own_in_both_modes(kind):
    layer = getattr(bnt, kind)(*FAMILY[kind])
    x = _family_input(kind)
    alone = layer(x[:1])
    assert torch.allclose(layer(x)[:1], alone, atol=1e-6), "the other examples changed the first one's output"
    assert torch.equal(layer.eval()(x[:1]), alone), "evaluation computes otherwise than training"


def test_group_norm_with_one_value_per_group_gives_beta_exactly():
    layer = bnt.GroupNorm(4, 4)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    y = layer(torch.randn(3, 4) * 5 + 7)
    assert torch.equal(y, layer.bias.detach().expand(3, 4))


def test_batch_norm_2d_takes_channels_last_input():
    x = torch.randn(4, 3, 5, 6).to(memory_format=torch.channels_last)
    ours, theirs = bnt.BatchNorm2d(3), nn.BatchNorm2d(3)
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.running_var, theirs.running_var)


@pytest.mark.parametrize("kind", FAMILY)
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_family_half_precision_input_is_returned_in_its_own_dtype(kind, half):
    channels = 3 if kind == "BatchNorm2d" else 6
    x = _family_input(kind, (4, channels, 3, 4)).to(half)
    ours, theirs = getattr(bnt, kind)(*FAMILY[kind]), getattr(nn, kind)(*FAMILY[kind])
    y = ours(x)
    assert y.dtype == half
    torch.testing.assert_close(y.float(), theirs(x).float(), atol=0.05, rtol=0.02)


# ---------------------------------------------------------------------------------------------
# CUDA: the same code on a GPU (skipped without one; the paths above cover the CPU).
# ---------------------------------------------------------------------------------------------


@CUDA
@pytest.mark.cuda
def test_cuda_half_precision_uses_float32_statistics():
    layer = bnt.BatchNorm1d(8, device="cuda")
    y = layer(torch.randn(32, 8, device="cuda", dtype=torch.float16))
    assert y.dtype == torch.float16 and layer.running_mean.dtype == torch.float32


# -- the small helpers the kernels share --------------------------------------------------------


def test_batch_dims_are_every_dimension_but_the_features():
    assert bnt.batch_dims(torch.zeros(4, 3)) == 0  # an int: read faster than [0]
    assert bnt.batch_dims(torch.zeros(4, 3, 5)) == [0, 2]
    assert bnt.batch_dims(torch.zeros(4, 3, 5, 6)) == [0, 2, 3]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_constant_is_a_zero_dim_cpu_tensor_in_its_model_s_dtype_made_once(dtype):
    like = torch.zeros(3, dtype=dtype)
    c = bnt.constant(0.1, like)
    assert c.dim() == 0 and c.dtype == dtype and c.device.type == "cpu"
    assert c.item() == torch.tensor(0.1, dtype=dtype).item()
    assert bnt.constant(0.1, like) is c  # reused, not made again
    assert bnt.constant(0.2, like) is not c and bnt.constant(0.1, like.double()).dtype == torch.float64


def test_a_step_of_the_layer_leaves_its_constants_as_they_were():
    x, dy = torch.randn(24, 5, 3) * 2 + 1, torch.randn(24, 5, 3)
    layer = bnt.BatchNorm1d(5)
    x.requires_grad_(True)
    layer(x).backward(dy)
    m = 24 * 3
    for value in (layer.eps, x.shape[1] / x.numel(), -1.0 / m):  # the numbers of the forward and backward passes
        hits = bnt._constant.cache_info().hits
        assert bnt.constant(value, x).item() == torch.tensor(value).item()
        assert bnt._constant.cache_info().hits == hits + 1  # the very tensor the step used


def test_under_torch_compile_a_constant_is_made_fresh_not_taken_from_the_cache(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    hits, misses = bnt._constant.cache_info().hits, bnt._constant.cache_info().misses
    c = bnt.constant(0.25, torch.zeros(1, dtype=torch.float64))
    assert c.dim() == 0 and c.dtype == torch.float64 and c.item() == 0.25
    assert bnt._constant.cache_info()[:2] == (hits, misses)  # the cache was not consulted


def test_a_constant_first_made_in_inference_mode_serves_autograd_later():
    with torch.inference_mode():
        bnt.constant(0.3712, torch.zeros(1))
    w = torch.ones(3, requires_grad=True)
    (w * bnt.constant(0.3712, torch.zeros(1))).sum().backward()  # an inference tensor could not be saved
    torch.testing.assert_close(w.grad, torch.full((3,), 0.3712))


def test_the_training_function_gives_nan_statistics_for_an_empty_batch_as_tensor_mean_does():
    y, mu, var = bnt.BatchNormFunction.apply(torch.zeros(0, 4), None, None, 1e-5)
    assert y.shape == (0, 4) and mu.isnan().all() and var.isnan().all()


# -- output_like: new memory for the kernels' outputs -------------------------------------------


def test_large_cpu_outputs_come_from_numpy_and_small_ones_from_torch():
    rows = bnt.HUGE_PAGE_BYTES // (4 * 64)  # exactly the threshold in float32
    large, small = torch.zeros(rows, 64), torch.zeros(rows - 1, 64)
    out_large, out_small = bnt.output_like(large), bnt.output_like(small)
    assert out_large.shape == large.shape and out_large.dtype == torch.float32 and out_large.is_contiguous()
    # NumPy's memory cannot grow in place; torch's can: that tells the two allocators apart
    with pytest.raises(RuntimeError, match="not resizable"):
        out_large.untyped_storage().resize_(out_large.untyped_storage().nbytes() + 4)
    out_small.untyped_storage().resize_(out_small.untyped_storage().nbytes() + 4)


def test_out_for_leaves_small_contiguous_outputs_to_the_operation_and_gives_the_rest_memory():
    rows = bnt.HUGE_PAGE_BYTES // (4 * 64)
    assert bnt.out_for(torch.zeros(rows - 1, 64)) is None  # the operation's own torch.empty: one call fewer
    large = bnt.out_for(torch.zeros(rows, 64))
    with pytest.raises(RuntimeError, match="not resizable"):  # NumPy's huge pages, as output_like's
        large.untyped_storage().resize_(large.untyped_storage().nbytes() + 4)
    strided = bnt.out_for(torch.zeros(64, 8).t())  # an operation would copy the input's strides: asked contiguous
    assert strided.shape == (8, 64) and strided.is_contiguous()


def test_output_like_takes_the_dtype_asked_for_and_bfloat16_from_torch():
    x = torch.zeros(bnt.HUGE_PAGE_BYTES // 2, dtype=torch.float16)
    assert bnt.output_like(x, torch.float32).dtype == torch.float32
    assert bnt.output_like(x).dtype == torch.float16
    assert bnt.output_like(x, torch.bfloat16).dtype == torch.bfloat16  # NumPy has no bfloat16


def test_large_outputs_and_gradients_match_pytorch():
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(bnt.HUGE_PAGE_BYTES // (4 * 32), 32, generator=gen) * 3 + 5).requires_grad_()
    dy = torch.randn(x.shape, generator=gen)
    ours, ref = bnt.BatchNorm1d(32), nn.BatchNorm1d(32)
    y_ours, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-4, atol=1e-4)  # float32 sums over 32768 rows
    g_ours = torch.autograd.grad(y_ours, (x, ours.weight, ours.bias), dy)
    g_ref = torch.autograd.grad(y_ref, (x, ref.weight, ref.bias), dy)
    torch.testing.assert_close(g_ours[0], g_ref[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(g_ours[1:], g_ref[1:], strict=True):  # sums of 32768 terms, ~180 in size
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5 * b.abs().max().item())


class _NoGradient(torch.autograd.Function):
    """The identity, whose backward hands on no gradient (an undefined one, as autograd allows)."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return None


def test_an_undefined_gradient_of_y_passes_no_gradient_through_the_layer():
    x = torch.randn(16, 3, requires_grad=True)
    y, mu, var = bnt.BatchNormFunction.apply(x, None, None, 1e-5)
    assert not mu.requires_grad and not var.requires_grad
    (dx,) = torch.autograd.grad(_NoGradient.apply(y).sum() + x.sum(), x)
    torch.testing.assert_close(dx, torch.ones_like(x))  # x.sum()'s gradient alone
