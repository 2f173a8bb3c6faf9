r"""The NumPy assignments' wrong variants: the reference written step by step, each mistake one step changed.

:class:`NumpyBatchNorm` implements the interface of ``bn-numpy-forward`` and ``bn-numpy-backward``
(:mod:`autograder.course.reference`) with bnlib's semantics, as a few small steps that read like
the book's equations (:mod:`bnlib.numpy` supplies the equations themselves). Each NumPy mistake of
the catalogue (:mod:`autograder.course.mistakes`) is a subclass that overrides the one step a
student gets wrong, as plainly as a student would write it. x is ``(m, D)``; statistics and
parameters ``(D,)``.

=========================================  ======================================================
step                                       what it computes
=========================================  ======================================================
:meth:`~NumpyBatchNorm.batch_statistics`   ``mu`` and the biased ``var`` of the batch
:meth:`~NumpyBatchNorm.eval_statistics`    what evaluation normalizes with: the running statistics
:meth:`~NumpyBatchNorm.std`                ``sqrt(var + eps)``
:meth:`~NumpyBatchNorm.scale_shift`        ``gamma * x_hat + beta``
:meth:`~NumpyBatchNorm.running_variance`   the unbiased batch variance, for the running average
:meth:`~NumpyBatchNorm.weights`            ``(1 - momentum, momentum)``: old and new
:meth:`~NumpyBatchNorm.blend`              ``keep * running + new * batch``, a new array
:meth:`~NumpyBatchNorm.dbeta` ...          one node of the backward graph each
=========================================  ======================================================

An instance is built for every :meth:`~autograder.course.mistakes.Mistake.implementation`, so a
variant that keeps state (:class:`BackwardIgnoresCache`) starts fresh each time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlib import numpy as bn

__all__ = [
    "NumpyBatchNorm",
    "UnbiasedVarianceNormalizes",
    "EpsOutsideSqrt",
    "EpsIgnored",
    "VarianceNotSquareRooted",
    "StatisticsOverFeatures",
    "GammaBetaSwapped",
    "EvalUsesBatchStatistics",
    "BiasedRunningVar",
    "MomentumReversed",
    "RunningStatsUpdatedInPlace",
    "DxMissingMeanPath",
    "DxMissingVariancePath",
    "DxStatisticsHeldConstant",
    "DxMissingGamma",
    "DgammaWrongAxis",
    "DbetaWrongAxis",
    "DgammaUsesX",
    "BackwardIgnoresCache",
    "BackwardChangesCache",
]


class NumpyBatchNorm:
    """The NumPy assignments' interface, step by step, exactly as the reference computes it.

    The interface's names are methods (``bn_forward_train``, ``bn_forward_eval``,
    ``update_running_stats``, ``bn_backward_staged``, ``bn_backward_compact``); a mistake
    overrides one of the steps they call.
    """

    # -- the forward pass ------------------------------------------------------------------------

    def batch_statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, var)``: the batch mean and the biased batch variance."""
        mu = bn.batch_mean(x)
        return mu, bn.batch_var(x, mu)

    def eval_statistics(self, x: np.ndarray, running_mean: np.ndarray,
                        running_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What evaluation normalizes with: the running statistics, never the batch's."""
        return running_mean, running_var

    def std(self, var: np.ndarray, eps: float) -> np.ndarray:
        """The denominator of the normalization, ``sqrt(var + eps)``."""
        return np.sqrt(var + eps)

    def scale_shift(self, x_hat: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """``gamma * x_hat + beta``."""
        return bn.scale_shift(x_hat, gamma, beta)

    def normalize(self, x, gamma, beta, mu, var, eps: float) -> tuple[np.ndarray, bn.Cache]:
        """``(y, cache)`` for the given statistics: bnlib's graph, node by node."""
        xmu = x - mu
        std = self.std(var, eps)
        istd = 1 / std
        x_hat = xmu * istd
        y = self.scale_shift(x_hat, gamma, beta)
        return y, bn.Cache(x, mu, xmu, var, std, istd, x_hat, gamma, eps, True)

    def bn_forward_train(self, x, gamma, beta, eps=1e-5):
        mu, var = self.batch_statistics(x)
        return self.normalize(x, gamma, beta, mu, var, eps)

    def bn_forward_eval(self, x, gamma, beta, running_mean, running_var, eps=1e-5):
        mu, var = self.eval_statistics(x, running_mean, running_var)
        return self.normalize(x, gamma, beta, mu, var, eps)[0]

    # -- the running statistics ------------------------------------------------------------------

    def running_variance(self, x: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """The batch variance the running variance moves towards: the unbiased one."""
        return bn.unbiased_var(bn.batch_var(x, mu), x.shape[0])

    def weights(self, momentum: float) -> tuple[float, float]:
        """``(keep, new)``: the weights of the old running value and of the batch's."""
        return 1 - momentum, momentum

    def blend(self, running: np.ndarray, keep: float, batch: np.ndarray, new: float) -> np.ndarray:
        """``keep * running + new * batch``, as a new array."""
        return keep * running + new * batch

    def update_running_stats(self, running_mean, running_var, x, momentum=0.1):
        mu = bn.batch_mean(x)
        var = self.running_variance(x, mu)
        keep, new = self.weights(momentum)
        return self.blend(running_mean, keep, mu, new), self.blend(running_var, keep, var, new)

    # -- the backward pass, node by node -----------------------------------------------------------

    def dbeta(self, dy: np.ndarray) -> np.ndarray:
        return dy.sum(axis=0)

    def dgamma(self, dy: np.ndarray, x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
        return (dy * x_hat).sum(axis=0)

    def dx_hat(self, dy: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        return dy * gamma

    def variance_path(self, dx_hat, xmu, istd, m: int) -> np.ndarray:
        """What flows into ``xmu`` through the variance."""
        dvar = -0.5 * (dx_hat * xmu).sum(axis=0) * istd**3
        return 2 * xmu * dvar / m

    def mean_path(self, dxmu: np.ndarray, m: int) -> np.ndarray:
        """What flows into ``x`` through the mean."""
        return -dxmu.sum(axis=0) / m

    def bn_backward(self, dy, cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(dx, dgamma, dbeta)`` from a bnlib cache."""
        x, mu, xmu, var, std, istd, x_hat, gamma, eps, _ = cache
        m = x.shape[0]
        dbeta = self.dbeta(dy)
        dgamma = self.dgamma(dy, x, x_hat)
        dx_hat = self.dx_hat(dy, gamma)
        dxmu = dx_hat * istd + self.variance_path(dx_hat, xmu, istd, m)
        dx = dxmu + self.mean_path(dxmu, m)
        return dx, dgamma, dbeta

    def bn_backward_staged(self, dy, cache):
        return self.bn_backward(dy, cache)

    def bn_backward_compact(self, dy, cache):
        return self.bn_backward(dy, cache)


# ---- the forward pass ------------------------------------------------------------------------


class UnbiasedVarianceNormalizes(NumpyBatchNorm):
    def batch_statistics(self, x):
        mu = bn.batch_mean(x)
        return mu, bn.unbiased_var(bn.batch_var(x, mu), x.shape[0])


class EpsOutsideSqrt(NumpyBatchNorm):
    def std(self, var, eps):
        return np.sqrt(var) + eps


class EpsIgnored(NumpyBatchNorm):
    def std(self, var, eps):
        return np.sqrt(var)


class VarianceNotSquareRooted(NumpyBatchNorm):
    def std(self, var, eps):
        return var + eps


class StatisticsOverFeatures(NumpyBatchNorm):
    def batch_statistics(self, x):
        return x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)


class GammaBetaSwapped(NumpyBatchNorm):
    def scale_shift(self, x_hat, gamma, beta):
        return bn.scale_shift(x_hat, beta, gamma)


class EvalUsesBatchStatistics(NumpyBatchNorm):
    def eval_statistics(self, x, running_mean, running_var):
        return self.batch_statistics(x)


# ---- the running statistics ------------------------------------------------------------------


class BiasedRunningVar(NumpyBatchNorm):
    def running_variance(self, x, mu):
        return bn.batch_var(x, mu)


class MomentumReversed(NumpyBatchNorm):
    def weights(self, momentum):
        return momentum, 1 - momentum


class RunningStatsUpdatedInPlace(NumpyBatchNorm):
    def blend(self, running, keep, batch, new):
        running *= keep
        running += new * batch
        return running


# ---- the backward pass -----------------------------------------------------------------------


class DxMissingMeanPath(NumpyBatchNorm):
    def mean_path(self, dxmu, m):
        return 0.0


class DxMissingVariancePath(NumpyBatchNorm):
    def variance_path(self, dx_hat, xmu, istd, m):
        return 0.0


class DxStatisticsHeldConstant(DxMissingMeanPath, DxMissingVariancePath):
    """Neither path through the statistics: the evaluation-mode gradient."""


class DxMissingGamma(NumpyBatchNorm):
    def dx_hat(self, dy, gamma):
        return dy


class DgammaWrongAxis(NumpyBatchNorm):
    def dgamma(self, dy, x, x_hat):
        return (dy * x_hat).sum(axis=1)


class DbetaWrongAxis(NumpyBatchNorm):
    def dbeta(self, dy):
        return dy.sum(axis=1)


class DgammaUsesX(NumpyBatchNorm):
    def dgamma(self, dy, x, x_hat):
        return (dy * x).sum(axis=0)


class BackwardIgnoresCache(NumpyBatchNorm):
    """The backward pass uses the last forward pass (kept on the side), not the cache it is given."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def bn_forward_train(self, x, gamma, beta, eps=1e-5):
        y, cache = super().bn_forward_train(x, gamma, beta, eps)
        self.last["cache"] = cache
        return y, cache

    def bn_backward(self, dy, cache):
        return super().bn_backward(dy, self.last["cache"])


class BackwardChangesCache(NumpyBatchNorm):
    """The backward pass scales the cached x_hat in place: a second call gives another answer."""

    def bn_backward(self, dy, cache):
        grads = super().bn_backward(dy, cache)
        np.multiply(cache.x_hat, 2.0, out=cache.x_hat)
        return grads
