r"""The scenarios of ``bn-conv``: BatchNorm2d, LayerNorm and GroupNorm, forward and backward, in NumPy.

Each function has its forward check (the output on several shapes) and one check per gradient
of its backward pass. Every backward check runs the student's own forward pass first (any cache
layout works) and keeps its output as a diagnostic (``diag_y_...``), so that a wrong forward
pass is named as such instead of blamed on the backward.

The shapes tell right from wrong: for BatchNorm2d ``m = N·H·W`` differs from ``C`` and the
spatial sizes differ from ``C``, so statistics over the wrong axes have the wrong shape or the
wrong numbers; for LayerNorm ``N != D`` and a batch of one is normal input; for GroupNorm the
groups hold two or more channels, so consecutive and interleaved groups differ.

This module runs INSIDE the sandbox: the standard library and NumPy only.
"""

from __future__ import annotations

from functools import partial

from autograder.inside.inputs import affine, examples, nchw
from autograder.inside.scenarios.registry import registrar
from autograder.inside.trial import Trial

scenario = registrar("bn-conv", "numpy")

_BN2D_SHAPES = ((4, 3, 5, 6), (2, 5, 3, 2))
_LN_SHAPES = ((6, 5), (3, 8), (1, 7))
#: (N, C, H, W) and G
_GN_SHAPES = (((3, 6, 4, 5), 3), ((2, 4, 3, 3), 2))


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _forward(t: Trial, rng, f, name: str, shape: tuple[int, ...], extra: tuple = ()):
    """Call ``f``, forward pass ``name``, on new inputs of ``shape`` (``extra``: its arguments before gamma).

    ``x`` is one example per row for ``layernorm_forward`` and an image batch otherwise;
    ``gamma`` and ``beta`` follow, drawn in that order. Returns ``(label, y, cache)``.
    """
    x = examples(rng, *shape) if name == "layernorm_forward" else nchw(rng, *shape)
    gamma, beta = affine(rng, shape[1])
    args = "".join(f"{a}, " for a in extra)
    label = f"{name}(x, {args}gamma, beta, 1e-05) with x of shape {shape}"
    y, cache = t.unpack(label, t.call(label, f, x, *extra, gamma, beta, 1e-5), 2, "(y, cache)")
    return label, y, cache


def _forward_outputs(t: Trial, rng, name: str, cases) -> None:
    """Keep ``y`` of forward pass ``name`` for each case, ``(shape, extra arguments before gamma)``."""
    f = t.fn(name)
    for shape, extra in cases:
        label, y, _ = _forward(t, rng, f, name, shape, extra)
        t.array(f"y_{_shape(shape)}", y, f"y from {label}")


# ---- BatchNorm2d ------------------------------------------------------------------------------


@scenario(
    "bn2d_forward_output",
    ("batchnorm2d_forward_train",),
    "batchnorm2d_forward_train normalizes each channel with the mean and the biased variance of "
    "its m = N*H*W values, then scales and shifts it by that channel's gamma and beta",
    rtol=1e-4,  # insensitive to where eps sits: bn2d_forward_eps grades that
    pure=True,
)
def _bn2d_forward_output(t: Trial, rng) -> None:
    _forward_outputs(t, rng, "batchnorm2d_forward_train", [(s, ()) for s in _BN2D_SHAPES])


@scenario(
    "bn2d_forward_eps",
    ("batchnorm2d_forward_train",),
    "batchnorm2d_forward_train adds eps to each channel's variance inside the square root, "
    "sqrt(var + eps), with the eps it is given (default 1e-5)",
)
def _bn2d_forward_eps(t: Trial, rng) -> None:
    f = t.fn("batchnorm2d_forward_train")
    shape = (3, 4, 2, 3)
    x = nchw(rng, *shape, sd=(0.005, 0.05))
    x[:, 0] = x[0, 0, 0, 0]  # a constant channel: var = 0, and eps alone keeps x_hat finite
    gamma, beta = affine(rng, shape[1])
    label = f"batchnorm2d_forward_train(x, gamma, beta) with the default eps, x of shape {shape} with small variances"
    y, _ = t.unpack(label, t.call(label, f, x, gamma, beta), 2, "(y, cache)")
    t.array("y_default_eps", y, f"y from {label}")
    label = f"batchnorm2d_forward_train(x, gamma, beta, 0.01) with x of shape {shape} with small variances"
    y, _ = t.unpack(label, t.call(label, f, x, gamma, beta, 0.01), 2, "(y, cache)")
    t.array("y_eps_0.01", y, f"y from {label}")


# ---- LayerNorm --------------------------------------------------------------------------------


@scenario(
    "ln_forward_output",
    ("layernorm_forward",),
    "layernorm_forward normalizes each example over its own D features (its mean and biased "
    "variance, eps inside the square root), whatever the rest of the batch, then scales and "
    "shifts each feature by its gamma and beta",
    pure=True,
)
def _ln_forward_output(t: Trial, rng) -> None:
    _forward_outputs(t, rng, "layernorm_forward", [(s, ()) for s in _LN_SHAPES])


# ---- GroupNorm --------------------------------------------------------------------------------


@scenario(
    "gn_forward_output",
    ("groupnorm_forward",),
    "groupnorm_forward splits the C channels into num_groups groups of C/G consecutive channels "
    "and normalizes each example's group over its (C/G)*H*W values (biased variance, eps inside "
    "the square root), then scales and shifts each channel by its gamma and beta",
    pure=True,
)
def _gn_forward_output(t: Trial, rng) -> None:
    _forward_outputs(t, rng, "groupnorm_forward", [(s, (g,)) for s, g in _GN_SHAPES])


# ---- the backward passes ----------------------------------------------------------------------

#: norm -> (forward, backward, its inputs: [(shape, extra args before gamma)], what the per-channel sums run over)
_NORMS = {
    "bn2d": ("batchnorm2d_forward_train", "batchnorm2d_backward",
             [(s, ()) for s in _BN2D_SHAPES], "N, H and W, one value per channel"),
    "ln": ("layernorm_forward", "layernorm_backward",
           [(s, ()) for s in _LN_SHAPES[:2]], "the batch, one value per feature"),
    "gn": ("groupnorm_forward", "groupnorm_backward",
           [(s, (g,)) for s, g in _GN_SHAPES], "N, H and W, one value per channel"),
}
_DX = {
    "bn2d": "dx along all three paths (direct, through each channel's mean, through its variance), with m = N*H*W",
    "ln": "dx along all three paths (direct, through each example's mean, through its variance), with m = D",
    "gn": "dx along all three paths (direct, through each group's mean, through its variance), with m = (C/G)*H*W",
}


def _backward(t: Trial, rng, norm: str, keep: str) -> None:
    """Forward with the student's forward pass, then keep gradient ``keep`` of its backward pass."""
    fwd_name, bwd_name, cases, _ = _NORMS[norm]
    fwd, bwd = t.fn(fwd_name), t.fn(bwd_name)
    for shape, extra in cases:
        label, y, cache = _forward(t, rng, fwd, fwd_name, shape, extra)
        dy = rng.normal(0, 1, shape)
        t.array(f"diag_y_{_shape(shape)}", y, f"y from {label}")
        blabel = f"{bwd_name}(dy, cache) for that cache and a random dy"
        dx, dgamma, dbeta = t.unpack(blabel, t.call(blabel, bwd, dy, cache), 3, "(dx, dgamma, dbeta)")
        grads = {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}
        t.array(f"{keep}_{_shape(shape)}", grads[keep], f"{keep} from {blabel}, x of shape {shape}")


for _norm, (_fwd, _bwd, _cases, _over) in _NORMS.items():
    _what = {
        "dx": _DX[_norm],
        "dgamma": f"dgamma = the sum of dy * x_hat over {_over}",
        "dbeta": f"dbeta = the sum of dy over {_over}",
    }
    for _keep in ("dx", "dgamma", "dbeta"):
        scenario(
            f"{_norm}_backward_{_keep}",
            (_fwd, _bwd),
            f"{_bwd} returns {_what[_keep]}",
            rtol=1e-4,  # eps's placement is graded by the forward checks
        )(partial(_backward, norm=_norm, keep=_keep))
