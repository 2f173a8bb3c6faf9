r"""The scenarios of ``bn-numpy-backward``: each gradient of both backward passes, and their use of the cache.

Every backward check runs the student's own ``bn_forward_train`` first (any cache layout
works) and keeps its output as a diagnostic (``diag_y_...``): a wrong forward pass is named
as such instead of blamed on the backward.

This module runs INSIDE the sandbox: the standard library and NumPy only.
"""

from __future__ import annotations

from functools import partial

from autograder.inside.inputs import affine, batch
from autograder.inside.scenarios.registry import registrar
from autograder.inside.trial import Trial

scenario = registrar("bn-numpy-backward", "numpy")

_BACKWARD_SHAPES = ((8, 5), (6, 3))
_GRADIENTS = (
    ("dx", "dx, the gradient of the input, along all three paths (direct, through the mean, through the variance)"),
    ("dgamma", "dgamma = sum over the batch of dy * x_hat, one value per feature"),
    ("dbeta", "dbeta = sum over the batch of dy, one value per feature"),
)


def _backward(t: Trial, rng, which: str, keep: str) -> None:
    """Forward with the student's bn_forward_train, then keep gradient ``keep`` of ``bn_backward_<which>``."""
    fwd = t.fn("bn_forward_train")
    bwd = t.fn(f"bn_backward_{which}")
    for n, d in _BACKWARD_SHAPES:
        x = batch(rng, n, d)
        gamma, beta = affine(rng, d)
        dy = rng.normal(0, 1, (n, d))
        label = f"bn_forward_train(x, gamma, beta, 1e-05) with x of shape {(n, d)}"
        y, cache = t.unpack(label, t.call(label, fwd, x, gamma, beta, 1e-5), 2, "(y, cache)")
        t.array(f"diag_y_{n}x{d}", y, f"y from {label}")
        blabel = f"bn_backward_{which}(dy, cache) for that cache and a random dy"
        dx, dgamma, dbeta = t.unpack(blabel, t.call(blabel, bwd, dy, cache), 3, "(dx, dgamma, dbeta)")
        grads = {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}
        t.array(f"{keep}_{n}x{d}", grads[keep], f"{keep} from {blabel}, x of shape {(n, d)}")


for _which in ("staged", "compact"):
    for _keep, _what in _GRADIENTS:
        scenario(
            f"backward_{_which}_{_keep}",
            ("bn_forward_train", f"bn_backward_{_which}"),
            f"bn_backward_{_which} returns {_what}",
            rtol=1e-4,  # eps's placement is graded by the forward checks
        )(partial(_backward, which=_which, keep=_keep))


@scenario(
    "backward_uses_cache",
    ("bn_forward_train", "bn_backward_compact", "bn_backward_staged"),
    "the backward passes take everything from the cache they are given (not from the last "
    "forward call) and leave it unchanged: the same cache gives the same gradients, whenever "
    "and however often it is used",
    same_arrays=tuple(
        (f"diag_{w}_{g}_{a}", f"diag_{w}_{g}_{b}")
        for w in ("compact", "staged")
        for g in ("dx", "dgamma")
        for a, b in (("first", "later"), ("later", "again"))
    ),
)
def _backward_uses_cache(t: Trial, rng) -> None:
    fwd = t.fn("bn_forward_train")
    for which in ("compact", "staged"):
        bwd = t.fn(f"bn_backward_{which}")
        n, d = 7, 4
        x1, x2 = batch(rng, n, d), batch(rng, n, d)
        gamma, beta = affine(rng, d)
        dy = rng.normal(0, 1, (n, d))
        l1 = "bn_forward_train(x1, gamma, beta, 1e-05)"
        _, cache1 = t.unpack(l1, t.call(l1, fwd, x1, gamma, beta, 1e-5), 2, "(y, cache)")
        calls = (
            ("first", f"bn_backward_{which}(dy, cache1) right after the forward pass of x1"),
            ("later", f"bn_backward_{which}(dy, cache1) after a forward pass of another batch x2"),
            ("again", f"bn_backward_{which}(dy, cache1) once more"),
        )
        for when, label in calls:
            if when == "later":
                l2 = "bn_forward_train(x2, gamma, beta, 1e-05), another batch"
                t.unpack(l2, t.call(l2, fwd, x2, gamma, beta, 1e-5), 2, "(y, cache)")
            dx, dgamma, _ = t.unpack(label, t.call(label, bwd, dy, cache1), 3, "(dx, dgamma, dbeta)")
            t.array(f"diag_{which}_dx_{when}", dx, f"dx from {label}")
            t.array(f"diag_{which}_dgamma_{when}", dgamma, f"dgamma from {label}")
