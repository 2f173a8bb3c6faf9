"""Every normalization layer of bnlib against PyTorch's: one suite, parametrized over the implementations.

Each implementation (:data:`IMPLEMENTATIONS`) is played, step by step, from the same
non-trivial start as ``nn.BatchNorm1d`` (random ``gamma`` of both signs, ``beta``, running
statistics and ``num_batches_tracked``), on the same batches (a shift and a scale per
feature, some features with a small variance) and the same random upstream gradient:
training steps, then evaluation steps. At every step ``y``, ``dx``, ``dgamma``, ``dbeta``
and the whole state dict (running mean, unbiased running variance, ``num_batches_tracked``)
must match PyTorch's. The inputs tell right from wrong: ``N >= 4`` and ``N != C`` in the
fixed cases, ``eps`` large enough that its placement shows, and ``dx`` compared at the scale
of the terms it is a difference of (with ``N = 2`` every correct ``dx`` is about 0).

The normalization family (:data:`FAMILY`: ``BatchNorm2d``, ``LayerNorm``, ``GroupNorm``, in
NumPy and in torch) is played the same way against ``nn.BatchNorm2d``, ``nn.LayerNorm`` and
``nn.GroupNorm``: a :class:`Config` names its layer (``kind``), and its inputs tell right from
wrong for that layer too (spatial sizes above 1, groups above 1 and below ``C``, a mean per
example, large offsets).

What is specific to one implementation (its equations, its errors, its blocks, its compiled
graphs) stays in that implementation's test module.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from torch import nn

import bnlib.fused_numpy as fnp
import bnlib.fused_torch as ft
import bnlib.numpy as bnp
import bnlib.torch as bnt

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}
#: Relative tolerances, at the scale of each quantity (see :func:`assert_same_steps`).
RTOL = {"float64": 1e-10, "float32": 2e-5}
CUDA = torch.cuda.is_available()

# Without a GPU, Triton's interpreter runs bnlib.triton's kernels. Triton reads TRITON_INTERPRET
# when the `triton` package is first imported, by anyone (TorchInductor imports it too): so it is
# set here, at collection, and restored when this module's tests are done.
_TRITON_INTERPRET_BEFORE = os.environ.get("TRITON_INTERPRET")
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(scope="module", autouse=True)
def _restore_triton_interpret() -> Iterator[None]:
    yield
    if _TRITON_INTERPRET_BEFORE is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _TRITON_INTERPRET_BEFORE


# ---------------------------------------------------------------------------------------------
# A run: one layer's configuration and its steps.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One layer (its kind, its constructor's options, its dtype) and the steps played on it."""

    n: int = 8
    c: int = 3
    length: int | None = None
    #: ``(H, W)``: the input is ``(N, C, H, W)`` (with ``length``, ``(N, C, L, H, W)``).
    hw: tuple[int, int] | None = None
    #: the ``torch.nn`` class it is checked against.
    kind: str = "BatchNorm1d"
    #: LayerNorm: how many trailing dimensions are normalized.
    normalized_ndim: int = 1
    #: GroupNorm: ``num_groups``.
    groups: int = 1
    #: added to every input: a large mean.
    offset: float = 0.0
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    bias: bool = True
    train_steps: int = 3
    eval_steps: int = 1
    seed: int = 0
    dtype: str = "float64"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, self.c, *([] if self.length is None else [self.length]), *(self.hw or ()))

    def args(self) -> tuple:
        """The constructor's positional arguments."""
        if self.kind == "LayerNorm":
            return (self.shape[len(self.shape) - self.normalized_ndim:],)
        return (self.groups, self.c) if self.kind == "GroupNorm" else (self.c,)

    def options(self) -> dict[str, Any]:
        """The constructor's keyword arguments, PyTorch's names."""
        if self.kind == "LayerNorm":
            return dict(eps=self.eps, elementwise_affine=self.affine, bias=self.bias)
        if self.kind == "GroupNorm":
            return dict(eps=self.eps, affine=self.affine, bias=self.bias)
        return dict(eps=self.eps, momentum=self.momentum, affine=self.affine,
                    track_running_stats=self.track_running_stats, bias=self.bias)

    def pytorch_layer(self, dtype: torch.dtype) -> nn.Module:
        """PyTorch's layer of this kind and these options."""
        return getattr(nn, self.kind)(*self.args(), **self.options(), dtype=dtype)

    def columns(self, a: np.ndarray) -> np.ndarray:
        """``a`` as a 2D array whose columns are the sets of values normalized together."""
        if self.kind == "LayerNorm":
            return a.reshape(-1, int(np.prod(self.args()[0]))).T
        if self.kind == "GroupNorm":
            return a.reshape(self.n * self.groups, -1).T
        return bnp.to_2d(a)


@dataclass
class Step:
    """What one step gave: the output, the gradients and the state dict after it, as float64-comparable arrays."""

    training: bool
    y: np.ndarray
    dx: np.ndarray
    dgamma: np.ndarray | None
    dbeta: np.ndarray | None
    state: dict[str, np.ndarray] = field(default_factory=dict)
    x: np.ndarray | None = None
    dy: np.ndarray | None = None
    #: the sets of values normalized together, as columns (:meth:`Config.columns`).
    columns: Callable[[np.ndarray], np.ndarray] = bnp.to_2d
    #: whether each column has its own gamma and beta (batch norm), or they vary within columns.
    params_per_column: bool = True

    def scales(self, eps: float) -> dict[str, float]:
        """The size of the terms each output and gradient is made of, before they cancel.

        y is gamma·(x - mu)/sqrt(var + eps): x's own rounding, relative to |x|, is magnified by
        |x|/sqrt(var + eps), large for a set of values close together next to their distance
        from 0 (then every correct y differs from PyTorch's by more than rtol·max|y|). dx is a
        difference of terms of size gamma·dy/sqrt(var + eps), nearly zero for tiny batches
        (with N = 2 every correct dx is ~0); dgamma and dbeta are sums over the batch of
        dy·x_hat and dy. Rounding errors scale with these, not with the results.
        """
        x2, dy2 = self.columns(self.x), self.columns(self.dy)
        if self.training or "running_var" not in self.state:
            mu, var = x2.mean(axis=0), x2.var(axis=0)
        else:
            mu, var = (self.state[k].astype(np.float64) for k in ("running_mean", "running_var"))
        x_hat = (x2 - mu) / np.sqrt(var + eps)
        gamma = np.abs(self.state.get("weight", np.ones(1))).max()
        # One gamma per column: the largest column sum; otherwise (layer and group norm) a
        # parameter's sum runs across columns, and the total bounds it.
        total = (lambda a: a.sum(axis=0).max()) if self.params_per_column else np.sum
        return {
            "y": float(gamma * (np.abs(x2).max(axis=0) / np.sqrt(var + eps)).max()),
            "dx": float(np.abs(dy2).max() * gamma / np.sqrt(var.min() + eps)),
            "dgamma": float(total(np.abs(dy2 * x_hat))),
            "dbeta": float(total(np.abs(dy2))),
        }


def start_state(cfg: Config) -> dict[str, torch.Tensor]:
    """The state every layer starts from: non-trivial gamma, beta and running statistics (float64)."""
    rng = np.random.default_rng(cfg.seed)
    layer = cfg.pytorch_layer(torch.float64)
    with torch.no_grad():
        if layer.weight is not None:
            shape = tuple(layer.weight.shape)
            layer.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)))
        if layer.bias is not None:
            layer.bias.copy_(torch.from_numpy(rng.normal(0, 1, tuple(layer.bias.shape))))
        if getattr(layer, "running_mean", None) is not None:
            layer.running_mean.copy_(torch.from_numpy(rng.normal(0, 1, cfg.c)))
            layer.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, cfg.c)))
            layer.num_batches_tracked.fill_(int(rng.integers(0, 5)))
    return layer.state_dict()


def batches(cfg: Config) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (x, dy) pairs of every step: shifted, scaled inputs and a random upstream gradient.

    A shift and a scale per channel; for the layers that normalize each example (layer and
    group norm), a shift per example too, so that a mean taken over the wrong values shows.
    """
    rng = np.random.default_rng(cfg.seed + 1)
    per_feature = (1, cfg.c) + (1,) * (len(cfg.shape) - 2)
    out = []
    for _ in range(cfg.train_steps + cfg.eval_steps):
        shift, scale = rng.normal(0, 2, cfg.c), rng.uniform(0.1, 3.0, cfg.c)
        x = rng.normal(size=cfg.shape) * scale.reshape(per_feature) + shift.reshape(per_feature) + cfg.offset
        dy = rng.normal(size=cfg.shape)
        if cfg.kind in ("LayerNorm", "GroupNorm"):
            x = x + rng.normal(0, 5, (cfg.n,) + (1,) * (len(cfg.shape) - 1))
        out.append((x, dy))
    return out


# ---------------------------------------------------------------------------------------------
# Two ways to step a layer: through autograd, or through a NumPy layer's backward.
# ---------------------------------------------------------------------------------------------


class TorchLayer:
    """A module like ``nn.BatchNorm1d`` (or ``nn.LayerNorm``, ...), stepped through autograd on its device."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, device: str = "cpu") -> None:
        self.module, self.dtype, self.device = module.to(device), dtype, device

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.module.state_dict().items()}

    def step(self, x: np.ndarray, dy: np.ndarray, training: bool) -> Step:
        module = self.module.train(training)
        xt = torch.tensor(x, dtype=self.dtype, device=self.device, requires_grad=True)
        module.zero_grad()
        y = module(xt)
        y.backward(torch.tensor(dy, dtype=self.dtype, device=self.device))

        def grad(p: nn.Parameter | None) -> np.ndarray | None:
            return None if p is None else p.grad.cpu().numpy().copy()

        return Step(training, y.detach().cpu().numpy().copy(), xt.grad.cpu().numpy().copy(),
                    grad(module.weight), grad(module.bias), self.state_dict(), x, dy)


class NumpyLayer:
    """The small adapter for a :class:`bnlib.numpy.BatchNorm1d`-like layer: forward, then ``backward(dy)``."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.layer.load_state_dict(state)  # it takes tensors as they are

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.layer.state_dict()

    def step(self, x: np.ndarray, dy: np.ndarray, training: bool) -> Step:
        layer = self.layer.train(training)
        y = layer(x.astype(layer.dtype))
        dx = layer.backward(dy.astype(layer.dtype))
        return Step(training, y, dx, layer.dgamma, layer.dbeta, self.state_dict(), x, dy)


def play(layer: TorchLayer | NumpyLayer, cfg: Config) -> list[Step]:
    """``cfg``'s steps on ``layer``, from :func:`start_state`."""
    layer.load_state_dict(start_state(cfg))
    steps = [layer.step(x, dy, i < cfg.train_steps) for i, (x, dy) in enumerate(batches(cfg))]
    per_column = cfg.kind.startswith("BatchNorm")
    return [replace(s, columns=cfg.columns, params_per_column=per_column) for s in steps]


@functools.lru_cache(maxsize=512)
def pytorch_steps(cfg: Config) -> list[Step]:
    """The truth: ``cfg`` played on PyTorch's layer (``nn.BatchNorm1d``, ...) on the CPU, once per configuration."""
    tdtype = DTYPES[cfg.dtype][1]
    return play(TorchLayer(cfg.pytorch_layer(tdtype), tdtype), cfg)


def assert_close(actual, expected, rtol: float, what: str = "", scale: float | None = None) -> None:
    """Normwise-relative comparison: every entry within ``rtol`` of ``scale`` (default: the largest expected entry)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), scale or 0.0, 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_same_steps(ours: list[Step], ref: list[Step], rtol: float, name: str, eps: float) -> None:
    """Every output, gradient and state entry of ``ours`` matches ``ref`` at every step."""
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        where = f"{name}, step {i} ({'train' if b.training else 'eval'})"
        scales = b.scales(eps)
        assert_close(a.y, b.y, rtol, f"{where}: y", scale=scales["y"])
        assert_close(a.dx, b.dx, rtol, f"{where}: dx", scale=scales["dx"])
        for g in ("dgamma", "dbeta"):
            if getattr(b, g) is None:
                assert getattr(a, g) is None, f"{where}: {g} should be None"
            else:
                assert_close(getattr(a, g), getattr(b, g), rtol, f"{where}: {g}", scale=scales[g])
        assert list(a.state) == list(b.state), f"{where}: state_dict keys"
        for k in b.state:
            if k == "num_batches_tracked":
                assert int(a.state[k]) == int(b.state[k]), f"{where}: {k}"
            else:
                assert_close(a.state[k], b.state[k], rtol, f"{where}: {k}")


# ---------------------------------------------------------------------------------------------
# The implementations.
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def triton_interpreter() -> Iterator[None]:
    """Without a GPU, Triton's interpreter runs the kernels: kept on while they run (whatever ran before)."""
    before = os.environ.get("TRITON_INTERPRET")
    if not CUDA:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = before


def _triton_layer(args: tuple, dtype: str, options: dict, device: str) -> TorchLayer:
    import bnlib.triton as bt  # here, under triton_interpreter(), which the fixture holds: not at collection

    if not (bt.INTERPRETED or device == "cuda"):
        raise RuntimeError("bnlib.triton was imported without the interpreter, and there is no GPU")
    return TorchLayer(bt.BatchNorm1d(*args, **options, dtype=DTYPES[dtype][1]), DTYPES[dtype][1], device)


@dataclass(frozen=True)
class Implementation:
    """One implementation of a layer: how to build it (adapted for stepping), and what it needs."""

    name: str
    #: ``build(args, dtype, options, device)``: the layer, wrapped in :class:`TorchLayer` or :class:`NumpyLayer`.
    build: Callable[[tuple, str, dict, str], TorchLayer | NumpyLayer]
    #: cheap enough for the property-based tests (no compilation, no interpreter).
    fast: bool = True
    #: runs on a CUDA GPU (the NumPy layers do not).
    cuda: bool = True
    #: held while its tests run.
    environment: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    #: each new dtype, rank or size class compiles again, for seconds: the large float32 batches
    #: are then one shape.
    compiles: bool = False
    #: where the CPU suite runs it.
    device: str = "cpu"
    #: the ``torch.nn`` layer it stands in for (a :attr:`Config.kind`).
    kind: str = "BatchNorm1d"

    def layer(self, cfg: Config, device: str | None = None) -> TorchLayer | NumpyLayer:
        assert cfg.kind == self.kind, f"{self.name} is a {self.kind}, not a {cfg.kind}"
        return self.build(cfg.args(), cfg.dtype, cfg.options(), device or self.device)

    def steps(self, cfg: Config, device: str | None = None) -> list[Step]:
        return play(self.layer(cfg, device), cfg)


def _torch_module(cls: Callable[..., nn.Module], **extra: Any) -> Callable[[tuple, str, dict, str], TorchLayer]:
    def build(args: tuple, dtype: str, options: dict, device: str) -> TorchLayer:
        return TorchLayer(cls(*args, **options, dtype=DTYPES[dtype][1], **extra), DTYPES[dtype][1], device)

    return build


def _numpy_layer(cls: type) -> Callable[[tuple, str, dict, str], NumpyLayer]:
    def build(args: tuple, dtype: str, options: dict, device: str) -> NumpyLayer:
        assert device == "cpu", "NumPy layers run on the CPU"
        return NumpyLayer(cls(*args, **options, dtype=DTYPES[dtype][0]))

    return build


IMPLEMENTATIONS = [
    Implementation("bnlib.numpy", _numpy_layer(bnp.BatchNorm1d), cuda=False),
    Implementation("bnlib.torch", _torch_module(bnt.BatchNorm1d)),
    Implementation("fused_numpy", _numpy_layer(fnp.BatchNorm1d), cuda=False),
    Implementation("fused_torch, eager", _torch_module(ft.BatchNorm1d, compiled=False)),
    Implementation("fused_torch, compiled", _torch_module(ft.BatchNorm1d, compiled=True), fast=False, compiles=True),
    # Triton's kernels run on CUDA; without a GPU, in Triton's interpreter on the CPU (exact, slow).
    Implementation("bnlib.triton", _triton_layer, fast=False, environment=triton_interpreter,
                   device="cuda" if CUDA else "cpu"),
]
FAST = [i for i in IMPLEMENTATIONS if i.fast]
ON_CUDA = [i for i in IMPLEMENTATIONS if i.cuda]


def _id(value: Any) -> str | None:
    if isinstance(value, Config):
        return "x".join(map(str, value.shape)) + f"-{value.dtype}"
    return value.name if isinstance(value, Implementation) else None


@pytest.fixture(scope="module")
def implementation(request) -> Iterator[Implementation]:
    """The implementation under test (parametrized indirectly), with what it needs held around its tests."""
    impl: Implementation = request.param
    if impl.compiles:
        request.getfixturevalue("inductor_cache")  # torch.compile's kernels in a folder removed afterwards
    if impl.name == "bnlib.triton":
        pytest.importorskip("triton", reason="Triton is an optional extra (pip install -e '.[triton]')")
    with impl.environment():
        yield impl


def over(implementations: list[Implementation], *names: str):
    """``parametrize`` the ``implementation`` fixture (and the other ``names``) over ``implementations``."""
    return lambda values: pytest.mark.parametrize(
        ("implementation", *names) if names else "implementation", values, indirect=["implementation"], ids=_id,
    )


# ---------------------------------------------------------------------------------------------
# The options, one at a time, in float64 (every implementation computes in float64 when asked).
# ---------------------------------------------------------------------------------------------

# One C throughout: torch.compile specializes on C, and every new C would compile the fused
# kernels again, for seconds (the property-based tests below vary C).
CASES = {
    "defaults": Config(n=16, c=5),
    "three-d": Config(n=6, c=5, length=7, eps=1e-2, momentum=0.5),
    "momentum-none": Config(n=12, c=5, momentum=None, eps=1e-3, train_steps=4),
    "affine-false": Config(n=9, c=5, affine=False, eps=0.1),
    "bias-false": Config(n=10, c=5, bias=False, eps=1e-2),
    "no-running-stats": Config(n=8, c=5, length=3, track_running_stats=False, eps=1e-2, eval_steps=2),
}


@over(IMPLEMENTATIONS, "case")([(i, c) for i in IMPLEMENTATIONS for c in CASES])
def test_matches_pytorch_in_training_and_evaluation(implementation, case):
    cfg = CASES[case]
    assert_same_steps(implementation.steps(cfg), pytorch_steps(cfg), RTOL[cfg.dtype], implementation.name, cfg.eps)


# Large float32 batches: sums over many rows, many blocks (fused_numpy) and tiles (triton), ragged ends.
FLOAT32 = [Config(n=4096, c=16, dtype="float32", train_steps=2), Config(n=300, c=70, dtype="float32", train_steps=2),
           Config(n=40, c=24, length=33, dtype="float32", train_steps=2)]


@over(IMPLEMENTATIONS, "cfg")([(i, c) for i in IMPLEMENTATIONS for c in (FLOAT32[:1] if i.compiles else FLOAT32)])
def test_matches_pytorch_in_float32_on_large_batches(implementation, cfg):
    assert_same_steps(implementation.steps(cfg), pytorch_steps(cfg), RTOL["float32"], implementation.name, cfg.eps)


# ---------------------------------------------------------------------------------------------
# Any configuration: property-based, for the implementations that run in microseconds.
# ---------------------------------------------------------------------------------------------


@st.composite
def configs(draw, dtype: str) -> Config:
    c = draw(st.integers(1, 6))
    length = draw(st.one_of(st.none(), st.integers(1, 5)))
    n = draw(st.integers(2 if length in (None, 1) else 1, 12))
    return Config(
        n=n,
        c=c,
        length=length,
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1, 1.0])),
        momentum=draw(st.sampled_from([None, 0.0, 0.1, 0.5, 0.9, 0.99, 1.0])),
        affine=draw(st.booleans()),
        bias=draw(st.booleans()),
        track_running_stats=draw(st.booleans()),
        train_steps=draw(st.integers(1, 4)),
        eval_steps=draw(st.integers(1, 2)),
        seed=draw(st.integers(0, 2**31)),
        dtype=dtype,
    )


@over(FAST)(FAST)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs("float64"))
def test_matches_pytorch_on_any_configuration_float64(implementation, cfg):
    assert_same_steps(implementation.steps(cfg), pytorch_steps(cfg), RTOL["float64"], implementation.name, cfg.eps)


@over(FAST)(FAST)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs("float32"))
# Two values per feature 0.005 apart near 1.9, eps 1e-3: x's own float32 rounding moves y by
# 8e-5 of max|y| (PyTorch's y is not symmetric, the exact one is); the y scale allows for it.
@example(cfg=Config(n=1, c=1, length=2, eps=1e-3, momentum=0.9, affine=False, bias=False,
                    train_steps=2, eval_steps=1, seed=185193, dtype="float32"))
def test_matches_pytorch_on_any_configuration_float32(implementation, cfg):
    assert_same_steps(implementation.steps(cfg), pytorch_steps(cfg), RTOL["float32"], implementation.name, cfg.eps)


# ---------------------------------------------------------------------------------------------
# State dicts: PyTorch's keys, in PyTorch's order, both ways.
# ---------------------------------------------------------------------------------------------

OPTIONS = [{}, {"affine": False}, {"track_running_stats": False}, {"bias": False}, {"momentum": None}]


@over(IMPLEMENTATIONS, "options")([(i, o) for i in IMPLEMENTATIONS for o in OPTIONS])
def test_state_dict_moves_between_it_and_pytorch(implementation, options):
    cfg = Config(c=4, **options)
    theirs = start_state(cfg)
    ours = implementation.layer(cfg)
    assert list(ours.state_dict()) == list(theirs), "state_dict keys, in PyTorch's order"
    ours.load_state_dict(theirs)
    back = cfg.pytorch_layer(torch.float64)
    back.load_state_dict({k: torch.as_tensor(v) for k, v in ours.state_dict().items()})  # strict
    for k, v in theirs.items():
        assert torch.equal(back.state_dict()[k], v), k
        assert back.state_dict()[k].dtype == v.dtype, k


class BiasedRunningVariance(bnt.BatchNorm1d):
    """A classic mistake: the running variance updated with the biased batch variance."""

    def _normalize_with_batch_stats(self, x):
        m = x.numel() // x.shape[1]
        y, mu, var = super()._normalize_with_batch_stats(x)
        return y, mu, var * (m - 1) / m  # the layer multiplies by m / (m - 1): biased, as stored


class EpsOutsideTheRoot(bnt.BatchNorm1d):
    """A subtle mistake: ``(x - mu) / (sqrt(var) + eps)``, about 1e-5 off at the default eps."""

    def _normalize_with_batch_stats(self, x):
        dims = bnt.batch_dims(x)
        mu, var = x.mean(dims), x.var(dims, correction=0)
        x_hat = (x - bnt.per_feature(mu, x)) / (bnt.per_feature(var.sqrt(), x) + self.eps)
        y = x_hat * bnt.per_feature(self.weight, x) + bnt.per_feature(self.bias, x)
        return y, mu.detach(), var.detach()


@pytest.mark.parametrize("mistake, where", [(BiasedRunningVariance, "running_var"), (EpsOutsideTheRoot, "y")],
                         ids=["biased-running-var", "eps-outside-the-root"])
def test_the_suite_tells_a_wrong_layer_from_a_right_one(mistake, where):
    wrong = Implementation(mistake.__name__, _torch_module(mistake))
    cfg = CASES["defaults"]
    with pytest.raises(AssertionError, match=rf"{mistake.__name__}, step 0 \(train\): {where}"):
        assert_same_steps(wrong.steps(cfg), pytorch_steps(cfg), RTOL[cfg.dtype], wrong.name, cfg.eps)


# ---------------------------------------------------------------------------------------------
# The normalization family: BatchNorm2d, LayerNorm and GroupNorm, against PyTorch's, the same way.
# ---------------------------------------------------------------------------------------------

FAMILY = [
    Implementation("bnlib.numpy.BatchNorm2d", _numpy_layer(bnp.BatchNorm2d), cuda=False, kind="BatchNorm2d"),
    Implementation("bnlib.torch.BatchNorm2d", _torch_module(bnt.BatchNorm2d), kind="BatchNorm2d"),
    Implementation("bnlib.numpy.LayerNorm", _numpy_layer(bnp.LayerNorm), cuda=False, kind="LayerNorm"),
    Implementation("bnlib.torch.LayerNorm", _torch_module(bnt.LayerNorm), kind="LayerNorm"),
    Implementation("bnlib.numpy.GroupNorm", _numpy_layer(bnp.GroupNorm), cuda=False, kind="GroupNorm"),
    Implementation("bnlib.torch.GroupNorm", _torch_module(bnt.GroupNorm), kind="GroupNorm"),
]

_BN2D = dict(kind="BatchNorm2d", n=4, c=3, hw=(5, 4))
_LN = dict(kind="LayerNorm", n=4, c=3, length=5)
_GN = dict(kind="GroupNorm", n=4, c=6, groups=3, hw=(3, 2))
#: Per kind, the options one at a time (float64). N != C, spatial sizes above 1, 1 < groups < C.
FAMILY_CASES: dict[str, dict[str, Config]] = {
    "BatchNorm2d": {
        "defaults": Config(**_BN2D),
        "large-mean": Config(**_BN2D, offset=1e3, eps=1e-3),
        "momentum-none": Config(**{**_BN2D, "n": 3}, momentum=None, eps=1e-3, train_steps=4),
        "affine-false": Config(**_BN2D, affine=False, eps=0.1),
        "bias-false": Config(**_BN2D, bias=False, eps=1e-2),
        "no-running-stats": Config(**_BN2D, track_running_stats=False, eps=1e-2, eval_steps=2),
        "one-pixel": Config(kind="BatchNorm2d", n=6, c=3, hw=(1, 1), eps=1e-2),
    },
    "LayerNorm": {
        "last-dim": Config(kind="LayerNorm", n=6, c=7, eps=1e-3),
        "two-dims": Config(**_LN, normalized_ndim=2, eps=1e-2),
        "images": Config(kind="LayerNorm", n=3, c=4, hw=(3, 2), normalized_ndim=3, eps=0.1),
        "large-mean": Config(**_LN, offset=1e3),
        "affine-false": Config(**_LN, affine=False, eps=0.1),
        "bias-false": Config(**_LN, normalized_ndim=2, bias=False, eps=1e-2),
    },
    "GroupNorm": {
        "defaults": Config(**_GN),
        "large-mean": Config(**_GN, offset=1e3, eps=1e-3),
        "one-group": Config(kind="GroupNorm", n=3, c=4, length=5, groups=1, eps=1e-2),
        "instance": Config(kind="GroupNorm", n=3, c=4, hw=(2, 3), groups=4, eps=1e-2),
        "two-d": Config(kind="GroupNorm", n=5, c=6, groups=2, eps=0.1),
        "affine-false": Config(**_GN, affine=False, eps=0.1),
        "bias-false": Config(**_GN, bias=False, eps=1e-2),
    },
}


@over(FAMILY, "case")([(i, c) for i in FAMILY for c in FAMILY_CASES[i.kind]])
def test_normalization_family_matches_pytorch(implementation, case):
    cfg = FAMILY_CASES[implementation.kind][case]
    assert_same_steps(implementation.steps(cfg), pytorch_steps(cfg), RTOL[cfg.dtype], implementation.name, cfg.eps)


FAMILY_FLOAT32 = {
    "BatchNorm2d": Config(kind="BatchNorm2d", n=16, c=8, hw=(16, 16), dtype="float32", train_steps=2),
    "LayerNorm": Config(kind="LayerNorm", n=64, c=16, hw=(8, 8), normalized_ndim=3, dtype="float32", train_steps=1),
    "GroupNorm": Config(kind="GroupNorm", n=16, c=32, groups=8, hw=(8, 8), dtype="float32", train_steps=1),
}


@over(FAMILY)(FAMILY)
def test_normalization_family_matches_pytorch_in_float32(implementation):
    cfg = FAMILY_FLOAT32[implementation.kind]
    assert_same_steps(implementation.steps(cfg), pytorch_steps(cfg), RTOL["float32"], implementation.name, cfg.eps)


@st.composite
def family_configs(draw, kind: str) -> Config:
    """Any shape and options of ``kind`` that PyTorch accepts in training.

    Layer and group norm normalize at least 2 values together: a single value normalizes to 0
    exactly, which PyTorch computes as rounding noise (about 1e-14) that no rtol can compare.
    """
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    hw = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    common = dict(kind=kind, n=n, c=c, eps=draw(st.sampled_from([1e-5, 1e-3, 0.1, 1.0])),
                  affine=draw(st.booleans()), bias=draw(st.booleans()), train_steps=draw(st.integers(1, 3)),
                  eval_steps=1, seed=draw(st.integers(0, 2**31)))
    if kind == "BatchNorm2d":
        hw = hw or (1, 1)
        if n * hw[0] * hw[1] == 1:
            hw = (2, hw[1])
        return Config(**common, hw=hw, momentum=draw(st.sampled_from([None, 0.0, 0.1, 0.9, 1.0])),
                      track_running_stats=draw(st.booleans()))
    if kind == "LayerNorm":
        cfg = Config(**common, hw=hw)
        cfg = replace(cfg, normalized_ndim=draw(st.integers(1, len(cfg.shape) - 1)))
        assume(np.prod(cfg.args()[0]) >= 2)
        return cfg
    groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
    assume((c // groups) * (hw[0] * hw[1] if hw else 1) >= 2)
    return Config(**common, hw=hw, groups=groups)


@over(FAMILY)(FAMILY)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_normalization_family_matches_pytorch_on_any_configuration(implementation, data):
    cfg = data.draw(family_configs(implementation.kind))
    assert_same_steps(implementation.steps(cfg), pytorch_steps(cfg), RTOL["float64"], implementation.name, cfg.eps)


FAMILY_OPTIONS = {
    "BatchNorm2d": [{}, {"affine": False}, {"track_running_stats": False}, {"bias": False}],
    "LayerNorm": [{}, {"affine": False}, {"bias": False}, {"normalized_ndim": 2}],
    "GroupNorm": [{}, {"affine": False}, {"bias": False}],
}
_FAMILY_SHAPES = {"BatchNorm2d": _BN2D, "LayerNorm": _LN, "GroupNorm": _GN}


@over(FAMILY, "options")([(i, o) for i in FAMILY for o in FAMILY_OPTIONS[i.kind]])
def test_family_state_dict_moves_between_it_and_pytorch(implementation, options):
    cfg = Config(**_FAMILY_SHAPES[implementation.kind], **options)
    theirs = start_state(cfg)
    ours = implementation.layer(cfg)
    assert list(ours.state_dict()) == list(theirs), "state_dict keys, in PyTorch's order"
    ours.load_state_dict(theirs)
    back = cfg.pytorch_layer(torch.float64)
    back.load_state_dict({k: torch.as_tensor(v) for k, v in ours.state_dict().items()})  # strict
    for k, v in theirs.items():
        assert torch.equal(back.state_dict()[k], v), k
        assert back.state_dict()[k].dtype == v.dtype, k


class BesselFactorOfN(bnt.BatchNorm2d):
    """A classic mistake in batch norm for convolutions: the running variance's factor N/(N-1), not m/(m-1)."""

    def _normalize_with_batch_stats(self, x):
        n, m = x.shape[0], x.numel() // x.shape[1]
        y, mu, var = super()._normalize_with_batch_stats(x)
        return y, mu, var * (m - 1) / m * n / (n - 1)  # the layer multiplies by m / (m - 1)


class UnbiasedLayerNorm(bnt.LayerNorm):
    """Layer norm normalizing with the unbiased variance (torch.var's default)."""

    def forward(self, x):
        dims = tuple(range(x.dim() - len(self.normalized_shape), x.dim()))
        x_hat = (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, keepdim=True) + self.eps)
        return x_hat * self.weight + self.bias


class OneGroup(bnt.GroupNorm):
    """Group norm taking the statistics over the whole example, whatever num_groups says."""

    def forward(self, x):
        return bnt.GroupNormFunction.apply(x, self.weight, self.bias, 1, self.eps)


@pytest.mark.parametrize("mistake, case, where", [
    (BesselFactorOfN, FAMILY_CASES["BatchNorm2d"]["defaults"], "running_var"),
    (UnbiasedLayerNorm, FAMILY_CASES["LayerNorm"]["two-dims"], "y"),
    (OneGroup, FAMILY_CASES["GroupNorm"]["defaults"], "y"),
], ids=["bessel-factor-of-n", "unbiased-layer-norm", "one-group"])
def test_the_suite_tells_a_wrong_family_layer_from_a_right_one(mistake, case, where):
    wrong = Implementation(mistake.__name__, _torch_module(mistake), kind=case.kind)
    with pytest.raises(AssertionError, match=rf"{mistake.__name__}, step 0 \(train\): {where}"):
        assert_same_steps(wrong.steps(case), pytorch_steps(case), RTOL[case.dtype], wrong.name, case.eps)


# ---------------------------------------------------------------------------------------------
# On a GPU: the same steps, float32, against the CPU's nn.BatchNorm1d (skipped without one; the
# CPU cases above run the same code).
# ---------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@over(ON_CUDA, "case")([(i, c) for i in ON_CUDA for c in ("defaults", "three-d", "affine-false")])
def test_matches_pytorch_on_cuda(implementation, case):
    cfg = replace(CASES[case], dtype="float32")
    assert_same_steps(implementation.steps(cfg, device="cuda"), pytorch_steps(cfg), 1e-4, implementation.name, cfg.eps)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@over([i for i in FAMILY if i.cuda], "case")(
    [(i, c) for i in FAMILY if i.cuda for c in ("defaults", "large-mean", "last-dim", "two-dims", "instance")
     if c in FAMILY_CASES[i.kind]])
def test_normalization_family_matches_pytorch_on_cuda(implementation, case):
    cfg = replace(FAMILY_CASES[implementation.kind][case], dtype="float32")
    assert_same_steps(implementation.steps(cfg, device="cuda"), pytorch_steps(cfg), 1e-4, implementation.name, cfg.eps)
