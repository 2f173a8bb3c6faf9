r"""The catalogue of known wrong batch norms: what each looks like, and where to reread.

Every entry is a :class:`Mistake`: a name, a one-line description of what the results look
like, the chapter (and section) of the book that gets it right, and a wrong implementation of
the graded notebooks' interface (:mod:`autograder.course.reference`). The autograder's judge runs a
failed check on each variant; when a student's numbers match one, the feedback names it
("your running_var equals the biased variance: PyTorch stores the unbiased one, m/(m-1) times
larger"). This is the one place these mistakes are written down; ``tests/test_mistakes.py``
checks that each one really differs from the reference.

A variant is the reference with one thing changed, written out as plainly as a student
would write it. ``Mistake.implementation(assignment)`` returns the whole interface of an
assignment (the reference's names, with the variant's replacements), built fresh on every
call: some variants keep state (one remembers the last forward pass).

The chapters named here are those of :data:`autograder.course.spec.CHAPTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from autograder.course.reference import reference, torch_function
from autograder.course.spec import CHAPTERS, INTERFACE
from bnlib import numpy as bn

__all__ = ["CHAPTERS", "Reading", "Mistake", "MISTAKES", "by_name", "for_assignment"]



@dataclass(frozen=True)
class Reading:
    """Where in the book to reread: a chapter (by stem) and a section within it."""

    chapter: str
    section: str

    @property
    def title(self) -> str:
        return CHAPTERS[self.chapter]

    def __str__(self) -> str:
        return f'the chapter "{self.title}" (book/{self.chapter}), section "{self.section}"'


@dataclass(frozen=True)
class Mistake:
    """One known wrong variant.

    Attributes:
        name: identifier, ``snake_case``.
        title: what the student did, in a few words ("eps outside the square root").
        looks_like: one line on what the results look like, for the feedback.
        read: where the book gets it right.
        assignments: the assignments where it can happen.
        overrides: the interface names the variant replaces.
        build: ``build(assignment) -> {name: wrong implementation}``.
    """

    name: str
    title: str
    looks_like: str
    read: Reading
    assignments: tuple[str, ...]
    overrides: tuple[str, ...]
    build: Callable[[str], dict[str, Any]]

    def implementation(self, assignment: str) -> dict[str, Any]:
        """The interface of ``assignment`` with this mistake in it (a fresh dict, fresh state)."""
        if assignment not in self.assignments:
            raise KeyError(f"mistake {self.name!r} does not apply to {assignment!r}")
        names = reference(assignment)
        names.update({k: v for k, v in self.build(assignment).items() if k in INTERFACE[assignment]})
        return names

    def describe(self) -> str:
        """``title: looks_like`` and where to read, as the feedback shows it."""
        return f"{self.title}. {self.looks_like} Reread {self.read}."


# ============================================================================================
# NumPy variants. x: (N, D); statistics and parameters (D,).
# ============================================================================================


def _np_forward_train(
    x, gamma, beta, eps=1e-5, *, ddof=0, eps_at="inside", axis=0, swap=False, no_sqrt=False
):
    """The training forward with one thing changed; returns ``(y, bnlib Cache)``."""
    m = x.shape[axis]
    mu = x.sum(axis=axis, keepdims=True) / m
    xmu = x - mu
    var = (xmu**2).sum(axis=axis, keepdims=True) / (m - ddof)
    if no_sqrt:
        std = var + eps
    elif eps_at == "inside":
        std = np.sqrt(var + eps)
    elif eps_at == "outside":
        std = np.sqrt(var) + eps
    else:  # eps forgotten
        std = np.sqrt(var)
    istd = 1 / std
    x_hat = xmu * istd
    y = beta * x_hat + gamma if swap else gamma * x_hat + beta
    if axis == 0:
        mu, var, std, istd = mu[0], var[0], std[0], istd[0]
    return y, bn.Cache(x, mu, xmu, var, std, istd, x_hat, gamma, eps, True)


def _np_forward_eval(
    x, gamma, beta, running_mean, running_var, eps=1e-5, *, batch_stats=False, eps_at="inside", swap=False
):
    if batch_stats:
        running_mean = x.mean(axis=0)
        running_var = x.var(axis=0)
    std = np.sqrt(running_var + eps) if eps_at == "inside" else (
        np.sqrt(running_var) + eps if eps_at == "outside" else np.sqrt(running_var)
    )
    x_hat = (x - running_mean) / std
    return beta * x_hat + gamma if swap else gamma * x_hat + beta


def _np_update(running_mean, running_var, x, momentum=0.1, *, biased=False, reversed_=False, in_place=False):
    m = x.shape[0]
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).sum(axis=0) / (m if biased else m - 1)
    keep, new = (momentum, 1 - momentum) if reversed_ else (1 - momentum, momentum)
    if in_place:
        running_mean *= keep
        running_mean += new * mu
        running_var *= keep
        running_var += new * var
        return running_mean, running_var
    return keep * running_mean + new * mu, keep * running_var + new * var


def _np_backward(dy, cache, *, mean_path=True, var_path=True, dgamma_axis=0, dbeta_axis=0, dgamma_of_x=False, gamma_in_dx=True):
    """The backward pass with one thing changed, from a bnlib Cache."""
    x, mu, xmu, var, std, istd, x_hat, gamma, eps, _ = cache
    m = x.shape[0]
    dbeta = dy.sum(axis=dbeta_axis)
    dgamma = (dy * (x if dgamma_of_x else x_hat)).sum(axis=dgamma_axis)
    dx_hat = dy * gamma if gamma_in_dx else dy
    dxmu = dx_hat * istd
    if var_path:
        dvar = -0.5 * (dx_hat * xmu).sum(axis=0) * istd**3
        dxmu = dxmu + 2 * xmu * dvar / m
    dx = dxmu - dxmu.sum(axis=0) / m if mean_path else dxmu
    return dx, dgamma, dbeta


def _np_forward_overrides(**flags) -> Callable[[str], dict[str, Any]]:
    def build(assignment: str) -> dict[str, Any]:
        def bn_forward_train(x, gamma, beta, eps=1e-5):
            return _np_forward_train(x, gamma, beta, eps, **flags)

        return {"bn_forward_train": bn_forward_train}

    return build


def _np_eval_overrides(**flags) -> Callable[[str], dict[str, Any]]:
    def build(assignment: str) -> dict[str, Any]:
        def bn_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
            return _np_forward_eval(x, gamma, beta, running_mean, running_var, eps, **flags)

        return {"bn_forward_eval": bn_forward_eval}

    return build


def _np_both_overrides(train: dict, evaluation: dict) -> Callable[[str], dict[str, Any]]:
    def build(assignment: str) -> dict[str, Any]:
        return {**_np_forward_overrides(**train)(assignment), **_np_eval_overrides(**evaluation)(assignment)}

    return build


def _np_update_overrides(**flags) -> Callable[[str], dict[str, Any]]:
    def build(assignment: str) -> dict[str, Any]:
        def update_running_stats(running_mean, running_var, x, momentum=0.1):
            return _np_update(running_mean, running_var, x, momentum, **flags)

        return {"update_running_stats": update_running_stats}

    return build


def _np_backward_overrides(**flags) -> Callable[[str], dict[str, Any]]:
    def build(assignment: str) -> dict[str, Any]:
        def wrong(dy, cache):
            return _np_backward(dy, cache, **flags)

        return {"bn_backward_staged": wrong, "bn_backward_compact": wrong}

    return build


def _np_backward_from_last_forward(assignment: str) -> dict[str, Any]:
    """A backward that ignores its cache and uses the last forward pass (kept in a global)."""
    last: dict[str, Any] = {}

    def bn_forward_train(x, gamma, beta, eps=1e-5):
        y, cache = bn.forward_train(x, gamma, beta, eps)
        last["cache"] = cache
        return y, cache

    def wrong(dy, cache):
        return bn.backward_compact(dy, last["cache"])

    return {"bn_forward_train": bn_forward_train, "bn_backward_staged": wrong, "bn_backward_compact": wrong}


def _np_backward_changes_cache(assignment: str) -> dict[str, Any]:
    """A backward that scales the cached x_hat in place: a second call gives a different answer."""

    def wrong(dy, cache):
        dx, dgamma, dbeta = bn.backward_compact(dy, cache)
        np.multiply(cache.x_hat, 2.0, out=cache.x_hat)
        return dx, dgamma, dbeta

    return {"bn_backward_staged": wrong, "bn_backward_compact": wrong}


# ============================================================================================
# PyTorch variants: a BatchNormFunction and a BatchNorm1d with the notebook's interface.
# ============================================================================================


def _torch_function_class(*, ddof=0, eps_at="inside", mean_path=True, var_path=True, dgamma_dim=0, n_grads=4):
    """A ``torch.autograd.Function`` for ``(m, C)`` input with one thing changed."""
    import torch

    class BatchNormFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, eps=1e-5):
            m = x.shape[0]
            mu = x.mean(dim=0)
            xmu = x - mu
            var = (xmu**2).sum(dim=0) / (m - ddof)
            std = torch.sqrt(var + eps) if eps_at == "inside" else torch.sqrt(var) + eps
            x_hat = xmu / std
            ctx.save_for_backward(xmu, x_hat, gamma, std)
            return gamma * x_hat + beta

        @staticmethod
        def backward(ctx, dy):
            xmu, x_hat, gamma, std = ctx.saved_tensors
            m = dy.shape[0]
            dbeta = dy.sum(dim=0)
            dgamma = (dy * x_hat).sum(dim=dgamma_dim)
            dx_hat = dy * gamma
            dxmu = dx_hat / std
            if var_path:
                dvar = -0.5 * (dx_hat * xmu).sum(dim=0) / std**3
                dxmu = dxmu + 2 * xmu * dvar / m
            dx = dxmu - dxmu.sum(dim=0) / m if mean_path else dxmu
            return (dx, dgamma, dbeta, None)[:n_grads]

    return BatchNormFunction


def _torch_module_class(
    function: Any,
    *,
    momentum_reversed=False,
    biased_running_var=False,
    unbiased_over_n_only=False,
    eval_batch_stats=False,
    eval_updates_stats=False,
    counts_batches=True,
    cumulative=True,
    ncl_reshape=False,
    param_names=("weight", "bias"),
    registers_buffers=True,
    factor_on_default_device=False,
    untracked_keeps_buffers=False,
    affine_ignored=False,
):
    """A ``BatchNorm1d`` that calls ``function.apply(x2d, gamma, beta, eps) -> y`` in training,
    with one thing changed (no flag set: PyTorch's semantics exactly)."""
    import torch
    from torch import nn

    w_name, b_name = param_names

    class BatchNorm1d(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None):
            super().__init__()
            factory = {"device": device, "dtype": dtype}
            self.num_features, self.eps, self.momentum = num_features, eps, momentum
            self.affine, self.track_running_stats = affine, track_running_stats
            self._seen = 0
            if affine or affine_ignored:
                setattr(self, w_name, nn.Parameter(torch.ones(num_features, **factory)))
                setattr(self, b_name, nn.Parameter(torch.zeros(num_features, **factory)))
            else:
                self.register_parameter(w_name, None)
                self.register_parameter(b_name, None)
            if track_running_stats or untracked_keeps_buffers:
                stats = {
                    "running_mean": torch.zeros(num_features, **factory),
                    "running_var": torch.ones(num_features, **factory),
                    "num_batches_tracked": torch.tensor(0, dtype=torch.long, device=device),
                }
                for k, v in stats.items():
                    if registers_buffers:
                        self.register_buffer(k, v)
                    else:
                        setattr(self, k, v)
            else:
                for k in ("running_mean", "running_var", "num_batches_tracked"):
                    self.register_buffer(k, None)

        def _update(self, x2):
            with torch.no_grad():
                if counts_batches:
                    self.num_batches_tracked += 1
                self._seen += 1
                if self.momentum is None:
                    momentum = 1.0 / self._seen if cumulative else 0.1
                else:
                    momentum = self.momentum
                m = x2.shape[0]
                mu = x2.mean(dim=0)
                squares = ((x2 - mu) ** 2).sum(dim=0)
                if biased_running_var:
                    var = squares / m
                elif unbiased_over_n_only:
                    n = self._last_n
                    var = squares / m * n / (n - 1)
                elif factor_on_default_device:
                    var = squares / m * torch.full((self.num_features,), m / (m - 1), dtype=squares.dtype)
                else:
                    var = squares / (m - 1)  # a tensor division: a batch of one gives inf, no exception
                keep, new = (momentum, 1 - momentum) if momentum_reversed else (1 - momentum, momentum)
                self.running_mean.mul_(keep).add_(new * mu)
                self.running_var.mul_(keep).add_(new * var)

        def forward(self, x):
            c = self.num_features
            self._last_n = x.shape[0]
            if x.dim() == 3:
                n, _, length = x.shape
                x2 = x.reshape(-1, c) if ncl_reshape else x.transpose(1, 2).reshape(-1, c)
            else:
                x2 = x
            weight, bias = getattr(self, w_name), getattr(self, b_name)
            if not self.affine and affine_ignored:
                weight, bias = weight, bias
            gamma = weight if weight is not None else torch.ones(c, dtype=x.dtype, device=x.device)
            beta = bias if bias is not None else torch.zeros(c, dtype=x.dtype, device=x.device)
            batch_stats = self.training or self.running_mean is None or eval_batch_stats
            if self.training and self.track_running_stats:
                self._update(x2)
            if batch_stats:
                y2 = function.apply(x2, gamma, beta, self.eps)
            else:
                if eval_updates_stats:
                    old_mean, old_var = self.running_mean.clone(), self.running_var.clone()
                    self._update(x2)
                else:
                    old_mean, old_var = self.running_mean, self.running_var
                y2 = (x2 - old_mean) / torch.sqrt(old_var + self.eps) * gamma + beta
            if x.dim() == 3:
                if ncl_reshape:
                    return y2.reshape(x.shape)
                return y2.reshape(n, length, c).transpose(1, 2)
            return y2

    return BatchNorm1d


def _torch_overrides(function: dict | None = None, module: dict | None = None) -> Callable[[str], dict[str, Any]]:
    """Build ``BatchNormFunction`` (with ``function`` flags) and a ``BatchNorm1d`` (with
    ``module`` flags) that uses it. A variant of the module alone uses bnlib's function."""

    def build(assignment: str) -> dict[str, Any]:
        fn = _torch_function_class(**function) if function is not None else torch_function()
        names: dict[str, Any] = {"BatchNormFunction": fn}
        names["BatchNorm1d"] = _torch_module_class(fn, **(module or {}))
        return names

    return build


# ============================================================================================
# The catalogue
# ============================================================================================

_FWD = ("bn-numpy-forward", "bn-numpy-backward")
_NP = ("bn-numpy-forward",)
_BWD = ("bn-numpy-backward",)
_TORCH = ("bn-torch",)
_BOTH_FWD = ("bn_forward_train", "bn_forward_eval")

MISTAKES: tuple[Mistake, ...] = (
    # ---- the forward pass ------------------------------------------------------------------
    Mistake(
        "unbiased_variance_normalizes",
        "the unbiased variance used to normalize",
        "You divided the squared deviations by m - 1: the outputs are a little too small "
        "(by sqrt((m-1)/m)), most visibly for small batches. Normalization uses the batch's own, "
        "biased variance (divide by m); only the running variance stores the unbiased one.",
        Reading("batch-variance", "Biased or unbiased"),
        _FWD + _TORCH,
        ("bn_forward_train", "BatchNormFunction", "BatchNorm1d"),
        lambda a: _torch_overrides({"ddof": 1})(a) if a == "bn-torch" else _np_forward_overrides(ddof=1)(a),
    ),
    Mistake(
        "eps_outside_sqrt",
        "eps added outside the square root",
        "You computed sqrt(var) + eps instead of sqrt(var + eps): the same at large variances, "
        "far off when a feature varies little or not at all.",
        Reading("normalize", "What eps protects against"),
        _NP + _TORCH,
        _BOTH_FWD + ("BatchNormFunction",),
        lambda a: _torch_overrides({"eps_at": "outside"})(a)
        if a == "bn-torch"
        else _np_both_overrides({"eps_at": "outside"}, {"eps_at": "outside"})(a),
    ),
    Mistake(
        "eps_ignored",
        "eps left out",
        "Your outputs ignore eps: a constant feature gives nan (0/0) instead of beta, and "
        "features with a tiny variance are blown up.",
        Reading("normalize", "What eps protects against"),
        _NP,
        _BOTH_FWD,
        _np_both_overrides({"eps_at": "none"}, {"eps_at": "none"}),
    ),
    Mistake(
        "variance_not_square_rooted",
        "divided by the variance instead of the standard deviation",
        "You divided by var + eps, not sqrt(var + eps): the normalized features do not have "
        "unit variance.",
        Reading("normalize", "The normalization"),
        _FWD,
        ("bn_forward_train",),
        _np_forward_overrides(no_sqrt=True),
    ),
    Mistake(
        "statistics_over_features",
        "statistics taken over the wrong axis",
        "You averaged over the features of each example (axis=1) instead of over the batch "
        "(axis=0): that is layer normalization, not batch normalization.",
        Reading("batch-mean", "One mean per feature"),
        _FWD,
        ("bn_forward_train",),
        _np_forward_overrides(axis=1),
    ),
    Mistake(
        "gamma_beta_swapped",
        "gamma and beta swapped",
        "You computed beta * x_hat + gamma: gamma scales, beta shifts.",
        Reading("scale-shift", "Scale and shift"),
        _FWD,
        _BOTH_FWD,
        _np_both_overrides({"swap": True}, {"swap": True}),
    ),
    # ---- evaluation and running statistics (NumPy) -----------------------------------------
    Mistake(
        "eval_uses_batch_statistics",
        "batch statistics used in evaluation",
        "Your evaluation output normalizes with the batch's own mean and variance, so one "
        "example's output depends on its batch-mates (and a batch of one gives beta). "
        "Evaluation uses the running statistics.",
        Reading("inference", "Why inference must not depend on the batch"),
        _NP + _TORCH,
        ("bn_forward_eval", "BatchNorm1d"),
        lambda a: _torch_overrides(module={"eval_batch_stats": True})(a)
        if a == "bn-torch"
        else _np_eval_overrides(batch_stats=True)(a),
    ),
    Mistake(
        "biased_running_var",
        "the biased variance stored in running_var",
        "Your running_var moves towards the biased batch variance: PyTorch stores the "
        "unbiased one, m/(m-1) times larger (m values per feature).",
        Reading("inference", "The unbiased running variance"),
        _NP + _TORCH,
        ("update_running_stats", "BatchNorm1d"),
        lambda a: _torch_overrides(module={"biased_running_var": True})(a)
        if a == "bn-torch"
        else _np_update_overrides(biased=True)(a),
    ),
    Mistake(
        "momentum_reversed",
        "momentum reversed (the Keras / CS231n convention)",
        "You computed momentum * running + (1 - momentum) * batch. In PyTorch momentum is the "
        "weight of the NEW batch: (1 - momentum) * running + momentum * batch, with momentum "
        "0.1 by default (Keras' 0.99 is the weight of the old value).",
        Reading("inference", "PyTorch's momentum and Keras' momentum"),
        _NP + _TORCH,
        ("update_running_stats", "BatchNorm1d"),
        lambda a: _torch_overrides(module={"momentum_reversed": True})(a)
        if a == "bn-torch"
        else _np_update_overrides(reversed_=True)(a),
    ),
    Mistake(
        "running_stats_updated_in_place",
        "running statistics changed in place",
        "Your update_running_stats modified the arrays it was given (running_mean *= ...): "
        "return new arrays and leave the arguments as they were.",
        Reading("inference", "Running averages"),
        _NP,
        ("update_running_stats",),
        _np_update_overrides(in_place=True),
    ),
    # ---- the backward pass (NumPy and torch) ------------------------------------------------
    Mistake(
        "dx_missing_mean_path",
        "the mean's path missing from dx",
        "Your dx leaves out the gradient that flows through the batch mean mu: it is off by "
        "gamma / sqrt(var + eps) times the batch average of dy, and it no longer sums to zero "
        "over the batch.",
        Reading("backward", "Two paths into x"),
        _BWD + _TORCH,
        ("bn_backward_staged", "bn_backward_compact", "BatchNormFunction"),
        lambda a: _torch_overrides({"mean_path": False})(a)
        if a == "bn-torch"
        else _np_backward_overrides(mean_path=False)(a),
    ),
    Mistake(
        "dx_missing_variance_path",
        "the variance's path missing from dx",
        "Your dx leaves out the gradient that flows through the batch variance: the term "
        "-x_hat * mean(dy * x_hat) (times gamma / sqrt(var + eps)) is missing.",
        Reading("backward", "Through the variance"),
        _BWD + _TORCH,
        ("bn_backward_staged", "bn_backward_compact", "BatchNormFunction"),
        lambda a: _torch_overrides({"var_path": False})(a)
        if a == "bn-torch"
        else _np_backward_overrides(var_path=False)(a),
    ),
    Mistake(
        "dx_statistics_held_constant",
        "dx computed as if the statistics were constants",
        "Your dx is dy * gamma / sqrt(var + eps): the evaluation-mode gradient. In training "
        "mu and var depend on x, so two more paths add to dx.",
        Reading("backward", "The computational graph"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        _np_backward_overrides(mean_path=False, var_path=False),
    ),
    Mistake(
        "dx_missing_gamma",
        "gamma missing from dx",
        "Your dx is the gradient for gamma = 1: the upstream gradient of x_hat is dy * gamma.",
        Reading("backward", "Scale and shift"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        _np_backward_overrides(gamma_in_dx=False),
    ),
    Mistake(
        "dgamma_wrong_axis",
        "dgamma summed over the wrong axis",
        "Your dgamma has one value per example instead of one per feature: sum dy * x_hat over "
        "the batch (axis 0).",
        Reading("backward", "Scale and shift"),
        _BWD + _TORCH,
        ("bn_backward_staged", "bn_backward_compact", "BatchNormFunction"),
        lambda a: _torch_overrides({"dgamma_dim": 1})(a)
        if a == "bn-torch"
        else _np_backward_overrides(dgamma_axis=1)(a),
    ),
    Mistake(
        "dbeta_wrong_axis",
        "dbeta summed over the wrong axis",
        "Your dbeta has one value per example instead of one per feature: sum dy over the "
        "batch (axis 0).",
        Reading("backward", "Scale and shift"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        _np_backward_overrides(dbeta_axis=1),
    ),
    Mistake(
        "dgamma_uses_x",
        "dgamma computed with x instead of x_hat",
        "Your dgamma is sum(dy * x): gamma multiplies the NORMALIZED input, so dgamma = "
        "sum(dy * x_hat).",
        Reading("backward", "Scale and shift"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        _np_backward_overrides(dgamma_of_x=True),
    ),
    Mistake(
        "backward_ignores_cache",
        "backward uses the last forward pass, not its cache",
        "Your backward pass gives the gradients of the most recent forward call (kept in a "
        "global variable), not of the cache it was given.",
        Reading("backward", "What the forward pass keeps"),
        _BWD,
        ("bn_forward_train", "bn_backward_staged", "bn_backward_compact"),
        _np_backward_from_last_forward,
    ),
    Mistake(
        "backward_changes_cache",
        "backward changes the cache in place",
        "Calling your backward pass twice with the same cache gives two different answers: "
        "it modifies the arrays in the cache.",
        Reading("backward", "What the forward pass keeps"),
        _BWD,
        ("bn_backward_staged", "bn_backward_compact"),
        _np_backward_changes_cache,
    ),
    Mistake(
        "backward_missing_eps_gradient",
        "backward returns three gradients for four inputs",
        "autograd needs one gradient per input of forward(ctx, x, gamma, beta, eps): return "
        "(dx, dgamma, dbeta, None), None for eps.",
        Reading("backward", "In PyTorch"),
        _TORCH,
        ("BatchNormFunction",),
        _torch_overrides({"n_grads": 3}),
    ),
    # ---- the PyTorch module ------------------------------------------------------------------
    Mistake(
        "ncl_reshaped_without_transpose",
        "(N, C, L) input reduced over the wrong axes",
        "You reshaped (N, C, L) straight to (N*L, C), which mixes channels and positions. Move "
        "C last first (x.transpose(1, 2).reshape(-1, C)), or reduce over dims (0, 2).",
        Reading("batch-mean", "Inputs of shape (N, C, L)"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"ncl_reshape": True}),
    ),
    Mistake(
        "running_var_unbiased_with_n",
        "running_var made unbiased with N instead of N*L",
        "For (N, C, L) input each channel's variance comes from m = N*L values: the unbiased "
        "correction is m/(m-1), not N/(N-1).",
        Reading("inference", "The unbiased running variance"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"unbiased_over_n_only": True}),
    ),
    Mistake(
        "running_stats_updated_in_eval",
        "running statistics updated in evaluation mode",
        "Your module changes running_mean / running_var (and counts the batch) in evaluation "
        "mode: only training batches update them.",
        Reading("train-eval", "What eval() changes"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"eval_updates_stats": True}),
    ),
    Mistake(
        "num_batches_not_counted",
        "num_batches_tracked not counted",
        "Your num_batches_tracked stays 0: it counts the training batches (add 1 per "
        "training forward pass), and momentum=None averages over it.",
        Reading("inference", "momentum=None: the cumulative average"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"counts_batches": False}),
    ),
    Mistake(
        "momentum_none_not_cumulative",
        "momentum=None not a cumulative average",
        "With momentum=None your running statistics are not the plain average of the batches "
        "seen so far: use momentum = 1 / num_batches_tracked (after counting this batch).",
        Reading("inference", "momentum=None: the cumulative average"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"cumulative": False}),
    ),
    Mistake(
        "parameters_misnamed",
        "parameters named other than weight and bias",
        "Your state_dict's keys differ from nn.BatchNorm1d's: the parameters must be called "
        "weight and bias (gamma and beta in the equations).",
        Reading("train-eval", "Parameters, buffers and the state_dict"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"param_names": ("gamma", "beta")}),
    ),
    Mistake(
        "buffers_not_registered",
        "running statistics kept as plain attributes",
        "Your running_mean, running_var and num_batches_tracked are plain tensors, not "
        "buffers: they are missing from the state_dict and module.to(device) leaves them "
        "behind. Use self.register_buffer.",
        Reading("train-eval", "Parameters, buffers and the state_dict"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"registers_buffers": False}),
    ),
    Mistake(
        "tensor_on_default_device",
        "a tensor created on the default device",
        "Your forward pass creates a tensor without device=x.device (e.g. torch.full(...) or "
        "torch.ones(C)), so it breaks when the input lives elsewhere (a GPU). Create tensors "
        "on the input's device, or avoid creating them.",
        Reading("train-eval", "Devices"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"factor_on_default_device": True}),
    ),
    Mistake(
        "untracked_uses_running_stats",
        "track_running_stats=False ignored",
        "With track_running_stats=False there are no running buffers (they are None) and "
        "evaluation mode normalizes with the batch's statistics.",
        Reading("train-eval", "Without running statistics"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"untracked_keeps_buffers": True}),
    ),
    Mistake(
        "affine_ignored",
        "affine=False ignored",
        "With affine=False the module has no parameters: weight and bias are None and the "
        "output is x_hat itself.",
        Reading("scale-shift", "Scale and shift"),
        _TORCH,
        ("BatchNorm1d",),
        _torch_overrides(module={"affine_ignored": True}),
    ),
)

_BY_NAME = {m.name: m for m in MISTAKES}
if len(_BY_NAME) != len(MISTAKES):
    raise RuntimeError("two mistakes share a name")


def by_name(name: str) -> Mistake:
    """The mistake called ``name``; ``KeyError`` names the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no mistake called {name!r}; known: {sorted(_BY_NAME)}") from None


def for_assignment(assignment: str, names: tuple[str, ...] | None = None) -> list[Mistake]:
    """The mistakes of ``assignment`` (that replace one of ``names``, when given), in catalogue order."""
    return [
        m
        for m in MISTAKES
        if assignment in m.assignments and (names is None or set(m.overrides) & set(names))
    ]
