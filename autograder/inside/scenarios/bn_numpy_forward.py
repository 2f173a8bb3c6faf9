r"""The scenarios of ``bn-numpy-forward``: the training and evaluation forward passes, and the running statistics.

Facts beyond the common ones: ``returned_shapes`` (``running_stats_new_arrays``).

This module runs INSIDE the sandbox: the standard library and NumPy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autograder.inside.inputs import affine, batch, running
from autograder.inside.scenarios.registry import registrar
from autograder.inside.trial import Trial

scenario = registrar("bn-numpy-forward", "numpy")

_TRAIN_SHAPES = ((8, 5), (32, 3), (5, 9))


@scenario(
    "forward_train_output",
    ("bn_forward_train",),
    "bn_forward_train normalizes each feature with the batch mean and the biased batch variance, "
    "then scales by gamma and shifts by beta",
    rtol=1e-4,  # insensitive to where eps sits: forward_train_eps grades that
    pure=True,
)
def _forward_train_output(t: Trial, rng) -> None:
    f = t.fn("bn_forward_train")
    for n, d in _TRAIN_SHAPES:
        x = batch(rng, n, d)
        gamma, beta = affine(rng, d)
        label = f"bn_forward_train(x, gamma, beta, 1e-05) with x of shape {(n, d)}"
        y, _cache = t.unpack(label, t.call(label, f, x, gamma, beta, 1e-5), 2, "(y, cache)")
        t.array(f"y_{n}x{d}", y, f"y from {label}")


@scenario(
    "forward_train_eps",
    ("bn_forward_train",),
    "bn_forward_train adds eps to the variance inside the square root, sqrt(var + eps), "
    "with the eps it is given (default 1e-5)",
)
def _forward_train_eps(t: Trial, rng) -> None:
    f = t.fn("bn_forward_train")
    n, d = 6, 4
    x = batch(rng, n, d, sd=(0.005, 0.05))
    x[:, 0] = x[0, 0]  # a constant feature: var = 0, and eps alone keeps x_hat finite
    gamma, beta = affine(rng, d)
    label = f"bn_forward_train(x, gamma, beta) with the default eps, x of shape {(n, d)} with small variances"
    y, _ = t.unpack(label, t.call(label, f, x, gamma, beta), 2, "(y, cache)")
    t.array("y_default_eps", y, f"y from {label}")
    label = f"bn_forward_train(x, gamma, beta, 0.01) with x of shape {(n, d)} with small variances"
    y, _ = t.unpack(label, t.call(label, f, x, gamma, beta, 0.01), 2, "(y, cache)")
    t.array("y_eps_0.01", y, f"y from {label}")


@scenario(
    "forward_eval_output",
    ("bn_forward_eval",),
    "bn_forward_eval normalizes with the running mean and running variance it is given, never "
    "with the batch's own statistics (a batch of one works too)",
    rtol=1e-4,
    pure=True,
)
def _forward_eval_output(t: Trial, rng) -> None:
    f = t.fn("bn_forward_eval")
    for n, d in ((8, 5), (1, 6)):
        x = batch(rng, n, d)
        gamma, beta = affine(rng, d)
        rm, rv = running(rng, d)
        label = f"bn_forward_eval(x, gamma, beta, running_mean, running_var, 1e-05) with x of shape {(n, d)}"
        y = t.call(label, f, x, gamma, beta, rm, rv, 1e-5)
        t.array(f"y_{n}x{d}", y, f"the output of {label}")


@scenario(
    "forward_eval_eps",
    ("bn_forward_eval",),
    "bn_forward_eval adds eps to the running variance inside the square root, sqrt(running_var + eps)",
)
def _forward_eval_eps(t: Trial, rng) -> None:
    f = t.fn("bn_forward_eval")
    n, d = 5, 4
    x = batch(rng, n, d, sd=(0.005, 0.05))
    gamma, beta = affine(rng, d)
    rm = x.mean(axis=0) + rng.normal(0, 0.01, d)
    rv = rng.uniform(1e-5, 1e-3, d)
    label = "bn_forward_eval(x, gamma, beta, running_mean, running_var) with the default eps and a small running_var"
    t.array("y_default_eps", t.call(label, f, x, gamma, beta, rm, rv), f"the output of {label}")
    label = "bn_forward_eval(x, gamma, beta, running_mean, running_var, 0.01) with a small running_var"
    t.array("y_eps_0.01", t.call(label, f, x, gamma, beta, rm, rv, 0.01), f"the output of {label}")


def _update(t: Trial, f, rm, rv, x, momentum=None) -> tuple[Any, Any, Any]:
    """Call ``update_running_stats`` on copies; ``(label, new running_mean, new running_var)``."""
    args = "running_mean, running_var, x" + ("" if momentum is None else f", {momentum}")
    label = f"update_running_stats({args}) with x of shape {x.shape}"
    extra = () if momentum is None else (momentum,)
    out = t.call(label, f, rm.copy(), rv.copy(), x.copy(), *extra)
    new_rm, new_rv = t.unpack(label, out, 2, "(running_mean, running_var)")
    return label, new_rm, new_rv


@scenario(
    "running_mean",
    ("update_running_stats",),
    "update_running_stats moves the running mean towards the batch mean: "
    "(1 - momentum) * running_mean + momentum * mean",
)
def _running_mean(t: Trial, rng) -> None:
    f = t.fn("update_running_stats")
    for n, d in ((8, 5), (4, 3)):
        x = batch(rng, n, d)
        rm, rv = running(rng, d)
        # momentum 0.5 weighs old and new alike: a reversed momentum is graded by running_momentum
        label, new_rm, _ = _update(t, f, rm, rv, x, 0.5)
        t.array(f"running_mean_{n}x{d}", new_rm, f"the running_mean returned by {label}")


@scenario(
    "running_var_unbiased",
    ("update_running_stats",),
    "update_running_stats folds the UNBIASED batch variance, m/(m-1) times the biased one, "
    "into the running variance",
)
def _running_var(t: Trial, rng) -> None:
    f = t.fn("update_running_stats")
    for n, d in ((4, 3), (10, 5)):
        x = batch(rng, n, d)
        rm, rv = running(rng, d)
        label, _, new_rv = _update(t, f, rm, rv, x, 0.5)
        t.array(f"running_var_{n}x{d}", new_rv, f"the running_var returned by {label}")


@scenario(
    "running_momentum",
    ("update_running_stats",),
    "momentum is the weight of the NEW batch (PyTorch's convention, default 0.1), "
    "for the mean and the variance",
)
def _running_momentum(t: Trial, rng) -> None:
    f = t.fn("update_running_stats")
    n, d = 6, 4
    x = batch(rng, n, d)
    const = np.repeat(rng.normal(0, 1, (1, d)), n, axis=0)  # var = 0: biased or not, the same
    for momentum in (None, 0.3):
        name = "default" if momentum is None else str(momentum)
        rm, rv = running(rng, d)
        label, new_rm, _ = _update(t, f, rm, rv, x, momentum)
        t.array(f"running_mean_momentum_{name}", new_rm, f"the running_mean returned by {label}")
        label, _, new_rv = _update(t, f, rm, rv, const, momentum)
        t.array(
            f"running_var_momentum_{name}",
            new_rv,
            f"the running_var returned by {label}, for a batch whose features are constant (variance 0)",
        )


@scenario(
    "running_stats_new_arrays",
    ("update_running_stats",),
    "update_running_stats returns two new arrays of shape (D,) and leaves running_mean, "
    "running_var and x as they were",
    pure=True,
    compare_facts=("returned_shapes",),
)
def _running_new(t: Trial, rng) -> None:
    f = t.fn("update_running_stats")
    x = batch(rng, 8, 5)
    rm, rv = running(rng, 5)
    label, new_rm, new_rv = _update(t, f, rm, rv, x)
    t.fact("returned_shapes", [list(np.shape(new_rm)), list(np.shape(new_rv))])
    t.array("diag_running_mean", new_rm, f"the running_mean returned by {label}")
    t.array("diag_running_var", new_rv, f"the running_var returned by {label}")
