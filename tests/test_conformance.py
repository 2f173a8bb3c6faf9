"""Every batch-norm layer of bnlib against torch.nn.BatchNorm1d: one suite, parametrized over the implementations.

Each implementation (:data:`IMPLEMENTATIONS`) is played, step by step, from the same
non-trivial start as ``nn.BatchNorm1d`` (random ``gamma`` of both signs, ``beta``, running
statistics and ``num_batches_tracked``), on the same batches (a shift and a scale per
feature, some features with a small variance) and the same random upstream gradient:
training steps, then evaluation steps. At every step ``y``, ``dx``, ``dgamma``, ``dbeta``
and the whole state dict (running mean, unbiased running variance, ``num_batches_tracked``)
must match PyTorch's. The inputs tell right from wrong: ``N >= 4`` and ``N != C`` in the
fixed cases, ``eps`` large enough that its placement shows, and ``dx`` compared at the scale
of the terms it is a difference of (with ``N = 2`` every correct ``dx`` is about 0).

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
from hypothesis import HealthCheck, given, settings
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
    """One layer (its constructor's options, its dtype) and the steps played on it."""

    n: int = 8
    c: int = 3
    length: int | None = None
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
        return (self.n, self.c) if self.length is None else (self.n, self.c, self.length)

    def options(self) -> dict[str, Any]:
        """The constructor's keyword arguments, PyTorch's names."""
        return dict(eps=self.eps, momentum=self.momentum, affine=self.affine,
                    track_running_stats=self.track_running_stats, bias=self.bias)


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

    def scales(self, eps: float) -> dict[str, float]:
        """The size of the terms each gradient is a sum of, before they cancel.

        dx is a difference of terms of size gamma·dy/sqrt(var + eps), nearly zero for tiny
        batches (with N = 2 every correct dx is ~0); dgamma and dbeta are sums over the batch
        of dy·x_hat and dy. Rounding errors scale with these, not with the results.
        """
        x2, dy2 = bnp.to_2d(self.x), bnp.to_2d(self.dy)
        if self.training or "running_var" not in self.state:
            mu, var = x2.mean(axis=0), x2.var(axis=0)
        else:
            mu, var = (self.state[k].astype(np.float64) for k in ("running_mean", "running_var"))
        x_hat = (x2 - mu) / np.sqrt(var + eps)
        gamma = np.abs(self.state.get("weight", np.ones(1))).max()
        return {
            "dx": float(np.abs(dy2).max() * gamma / np.sqrt(var.min() + eps)),
            "dgamma": float(np.abs(dy2 * x_hat).sum(axis=0).max()),
            "dbeta": float(np.abs(dy2).sum(axis=0).max()),
        }


def start_state(cfg: Config) -> dict[str, torch.Tensor]:
    """The state every layer starts from: non-trivial gamma, beta and running statistics (float64)."""
    rng = np.random.default_rng(cfg.seed)
    layer = nn.BatchNorm1d(cfg.c, **cfg.options(), dtype=torch.float64)
    with torch.no_grad():
        if layer.weight is not None:
            layer.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, cfg.c) * rng.choice([-1, 1], cfg.c)))
        if layer.bias is not None:
            layer.bias.copy_(torch.from_numpy(rng.normal(0, 1, cfg.c)))
        if layer.running_mean is not None:
            layer.running_mean.copy_(torch.from_numpy(rng.normal(0, 1, cfg.c)))
            layer.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, cfg.c)))
            layer.num_batches_tracked.fill_(int(rng.integers(0, 5)))
    return layer.state_dict()


def batches(cfg: Config) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (x, dy) pairs of every step: shifted, scaled inputs and a random upstream gradient."""
    rng = np.random.default_rng(cfg.seed + 1)
    per_feature = (1, cfg.c) if cfg.length is None else (1, cfg.c, 1)
    out = []
    for _ in range(cfg.train_steps + cfg.eval_steps):
        shift, scale = rng.normal(0, 2, cfg.c), rng.uniform(0.1, 3.0, cfg.c)
        x = rng.normal(size=cfg.shape) * scale.reshape(per_feature) + shift.reshape(per_feature)
        out.append((x, rng.normal(size=cfg.shape)))
    return out


# ---------------------------------------------------------------------------------------------
# Two ways to step a layer: through autograd, or through a NumPy layer's backward.
# ---------------------------------------------------------------------------------------------


class TorchLayer:
    """An ``nn.BatchNorm1d``-like module, stepped through autograd on its device."""

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

    def __init__(self, layer: bnp.BatchNorm1d) -> None:
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
    return [layer.step(x, dy, i < cfg.train_steps) for i, (x, dy) in enumerate(batches(cfg))]


@functools.lru_cache(maxsize=512)
def pytorch_steps(cfg: Config) -> list[Step]:
    """The truth: ``cfg`` played on ``torch.nn.BatchNorm1d`` on the CPU (computed once per configuration)."""
    tdtype = DTYPES[cfg.dtype][1]
    return play(TorchLayer(nn.BatchNorm1d(cfg.c, **cfg.options(), dtype=tdtype), tdtype), cfg)


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
        assert_close(a.y, b.y, rtol, f"{where}: y")
        scales = b.scales(eps)
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


def _triton_layer(c: int, dtype: str, options: dict, device: str) -> TorchLayer:
    import bnlib.triton as bt  # here, under triton_interpreter(), which the fixture holds: not at collection

    if not (bt.INTERPRETED or device == "cuda"):
        raise RuntimeError("bnlib.triton was imported without the interpreter, and there is no GPU")
    return TorchLayer(bt.BatchNorm1d(c, **options, dtype=DTYPES[dtype][1]), DTYPES[dtype][1], device)


@dataclass(frozen=True)
class Implementation:
    """One implementation of ``BatchNorm1d``: how to build it (adapted for stepping), and what it needs."""

    name: str
    #: ``build(C, dtype, options, device)``: the layer, wrapped in :class:`TorchLayer` or :class:`NumpyLayer`.
    build: Callable[[int, str, dict, str], TorchLayer | NumpyLayer]
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

    def layer(self, cfg: Config, device: str | None = None) -> TorchLayer | NumpyLayer:
        return self.build(cfg.c, cfg.dtype, cfg.options(), device or self.device)

    def steps(self, cfg: Config, device: str | None = None) -> list[Step]:
        return play(self.layer(cfg, device), cfg)


def _torch_module(cls: Callable[..., nn.Module], **extra: Any) -> Callable[[int, str, dict, str], TorchLayer]:
    def build(c: int, dtype: str, options: dict, device: str) -> TorchLayer:
        return TorchLayer(cls(c, **options, dtype=DTYPES[dtype][1], **extra), DTYPES[dtype][1], device)

    return build


def _numpy_layer(cls: type[bnp.BatchNorm1d]) -> Callable[[int, str, dict, str], NumpyLayer]:
    def build(c: int, dtype: str, options: dict, device: str) -> NumpyLayer:
        assert device == "cpu", "NumPy layers run on the CPU"
        return NumpyLayer(cls(c, **options, dtype=DTYPES[dtype][0]))

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
    back = nn.BatchNorm1d(cfg.c, **cfg.options(), dtype=torch.float64)
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
# On a GPU: the same steps, float32, against the CPU's nn.BatchNorm1d (skipped without one; the
# CPU cases above run the same code).
# ---------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@over(ON_CUDA, "case")([(i, c) for i in ON_CUDA for c in ("defaults", "three-d", "affine-false")])
def test_matches_pytorch_on_cuda(implementation, case):
    cfg = replace(CASES[case], dtype="float32")
    assert_same_steps(implementation.steps(cfg, device="cuda"), pytorch_steps(cfg), 1e-4, implementation.name, cfg.eps)
