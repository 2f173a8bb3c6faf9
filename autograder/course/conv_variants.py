r"""``bn-conv``'s wrong variants: BatchNorm2d, LayerNorm and GroupNorm step by step, each mistake one step changed.

:class:`NumpyNormFamily` implements the interface of ``bn-conv`` (:mod:`autograder.course.reference`)
with bnlib's semantics. All three layers normalize a 2D view of their input along one axis,
and share one backward formula, the compact one of the chapter "The backward pass" with the
right ``m``:

==========================  ======================  ==========================================
layer                       the 2D view             statistics along
==========================  ======================  ==========================================
BatchNorm2d                 ``(N·H·W, C)``           axis 0: ``m = N·H·W`` values per channel
LayerNorm                   ``(N, D)``               axis 1: ``m = D`` values per example
GroupNorm                   ``(N·G, (C/G)·H·W)``     axis 1: ``m = (C/G)·H·W`` per example and group
==========================  ======================  ==========================================

Each bn-conv mistake of the catalogue (:mod:`autograder.course.mistakes`) is a subclass that
overrides one step, as plainly as a student would write it. The cache is a :class:`Cache`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Cache",
    "NumpyNormFamily",
    "Bn2dReshapedWithoutTranspose",
    "Bn2dDgammaPerPosition",
    "LayernormOverBatch",
    "LayernormUnbiasedVariance",
    "LayernormRunningStatistics",
    "GroupnormGroupsInterleaved",
    "NormDxMissingMeanPath",
    "NormDxMissingVariancePath",
]


@dataclass(frozen=True)
class Cache:
    """What a backward pass needs: the 2D view's ``x_hat`` and ``1/sqrt(var + eps)``, and how to undo the view.

    Attributes:
        x_hat: the normalized 2D view.
        istd: ``1 / sqrt(var + eps)``, broadcastable against ``x_hat``.
        gamma: the scale, as the layer was given it.
        axis: the axis of the 2D view the statistics run along.
        shape: the input's shape.
        groups: GroupNorm's ``G`` (0 for the other layers).
    """

    x_hat: np.ndarray
    istd: np.ndarray
    gamma: np.ndarray
    axis: int
    shape: tuple[int, ...]
    groups: int = 0


class NumpyNormFamily:
    """``bn-conv``'s interface, step by step, exactly as the reference computes it."""

    # -- what all three share ---------------------------------------------------------------------

    def moments(self, x2: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, var)`` along ``axis``: the mean and the biased variance, kept broadcastable."""
        mu = x2.mean(axis=axis, keepdims=True)
        return mu, ((x2 - mu) ** 2).mean(axis=axis, keepdims=True)

    def normalize(self, x2: np.ndarray, mu: np.ndarray, var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """``(x_hat, istd)``."""
        istd = 1 / np.sqrt(var + eps)
        return (x2 - mu) * istd, istd

    def mean_path(self, dx_hat: np.ndarray, axis: int) -> np.ndarray:
        """What flows back through the mean: the average of ``dx_hat``."""
        return dx_hat.mean(axis=axis, keepdims=True)

    def variance_path(self, dx_hat: np.ndarray, x_hat: np.ndarray, axis: int) -> np.ndarray:
        """What flows back through the variance: ``x_hat`` times the average of ``dx_hat * x_hat``."""
        return x_hat * (dx_hat * x_hat).mean(axis=axis, keepdims=True)

    def dx_rows(self, dx_hat: np.ndarray, cache: Cache) -> np.ndarray:
        """The compact formula on the 2D view: ``istd * (dx_hat - mean path - variance path)``."""
        a = cache.axis
        return cache.istd * (dx_hat - self.mean_path(dx_hat, a) - self.variance_path(dx_hat, cache.x_hat, a))

    # -- BatchNorm2d -------------------------------------------------------------------------------

    def bn2d_rows(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W) -> (N·H·W, C)``: channels last, then one row per position."""
        return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])

    def bn2d_unrows(self, y2: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Undo :meth:`bn2d_rows`."""
        n, c, h, w = shape
        return np.moveaxis(y2.reshape(n, h, w, c), -1, 1)

    def bn2d_param_grads(self, dy2: np.ndarray, x_hat2: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
        """``(dgamma, dbeta)``: sums over every row (position of every example), one per channel."""
        return (dy2 * x_hat2).sum(axis=0), dy2.sum(axis=0)

    def batchnorm2d_forward_train(self, x, gamma, beta, eps=1e-5):
        x2 = self.bn2d_rows(x)
        mu, var = self.moments(x2, 0)
        x_hat, istd = self.normalize(x2, mu, var, eps)
        y2 = gamma * x_hat + beta
        return self.bn2d_unrows(y2, x.shape), Cache(x_hat, istd, gamma, 0, x.shape)

    def batchnorm2d_backward(self, dy, cache: Cache):
        dy2 = self.bn2d_rows(dy)
        dgamma, dbeta = self.bn2d_param_grads(dy2, cache.x_hat, cache.shape)
        dx2 = self.dx_rows(dy2 * cache.gamma, cache)
        return self.bn2d_unrows(dx2, cache.shape), dgamma, dbeta

    # -- LayerNorm ---------------------------------------------------------------------------------

    def ln_axis(self) -> int:
        """The axis of ``(N, D)`` the statistics run along: each example's features."""
        return 1

    def ln_moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, var)`` of each example."""
        return self.moments(x, self.ln_axis())

    def layernorm_forward(self, x, gamma, beta, eps=1e-5):
        mu, var = self.ln_moments(x)
        x_hat, istd = self.normalize(x, mu, var, eps)
        return gamma * x_hat + beta, Cache(x_hat, istd, gamma, self.ln_axis(), x.shape)

    def layernorm_backward(self, dy, cache: Cache):
        dgamma, dbeta = (dy * cache.x_hat).sum(axis=0), dy.sum(axis=0)
        return self.dx_rows(dy * cache.gamma, cache), dgamma, dbeta

    # -- GroupNorm ---------------------------------------------------------------------------------

    def gn_group(self, x: np.ndarray, groups: int) -> np.ndarray:
        """``(N, C, H, W) -> (N·G, (C/G)·H·W)``: one row per example and group of consecutive channels."""
        return x.reshape(x.shape[0] * groups, -1)

    def gn_ungroup(self, x2: np.ndarray, shape: tuple[int, ...], groups: int) -> np.ndarray:
        """Undo :meth:`gn_group`."""
        return x2.reshape(shape)

    def groupnorm_forward(self, x, num_groups, gamma, beta, eps=1e-5):
        x2 = self.gn_group(x, num_groups)
        mu, var = self.moments(x2, 1)
        x_hat2, istd = self.normalize(x2, mu, var, eps)
        x_hat = self.gn_ungroup(x_hat2, x.shape, num_groups)
        y = gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1)
        return y, Cache(x_hat2, istd, gamma, 1, x.shape, num_groups)

    def groupnorm_backward(self, dy, cache: Cache):
        g = cache.groups
        x_hat = self.gn_ungroup(cache.x_hat, cache.shape, g)
        dgamma, dbeta = (dy * x_hat).sum(axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))
        dx_hat = self.gn_group(dy * cache.gamma.reshape(1, -1, 1, 1), g)
        return self.gn_ungroup(self.dx_rows(dx_hat, cache), cache.shape, g), dgamma, dbeta


# ---- BatchNorm2d -----------------------------------------------------------------------------


class Bn2dReshapedWithoutTranspose(NumpyNormFamily):
    """``x.reshape(-1, C)`` straight from ``(N, C, H, W)``: each "channel" column mixes channels and positions."""

    def bn2d_rows(self, x):
        return x.reshape(-1, x.shape[1])

    def bn2d_unrows(self, y2, shape):
        return y2.reshape(shape)


class Bn2dDgammaPerPosition(NumpyNormFamily):
    """dgamma and dbeta summed over the batch axis only: one per channel and pixel, ``(C, H, W)``."""

    def bn2d_param_grads(self, dy2, x_hat2, shape):
        dy, x_hat = self.bn2d_unrows(dy2, shape), self.bn2d_unrows(x_hat2, shape)
        return (dy * x_hat).sum(axis=0), dy.sum(axis=0)


# ---- LayerNorm -------------------------------------------------------------------------------


class LayernormOverBatch(NumpyNormFamily):
    """Statistics over the batch (axis 0), as batch norm takes them."""

    def ln_axis(self):
        return 0


class LayernormUnbiasedVariance(NumpyNormFamily):
    """Each example's variance divided by D - 1."""

    def ln_moments(self, x):
        mu, var = self.moments(x, 1)
        d = x.shape[1]
        return mu, var * d / (d - 1)


class LayernormRunningStatistics(NumpyNormFamily):
    """Batch norm's running statistics carried over: running averages (from 0 and 1, momentum 0.1) normalize."""

    def ln_moments(self, x):
        mu, var = self.moments(x, 1)
        momentum = 0.1
        running_mean = (1 - momentum) * 0.0 + momentum * mu
        running_var = (1 - momentum) * 1.0 + momentum * var
        return running_mean, running_var


# ---- GroupNorm -------------------------------------------------------------------------------


class GroupnormGroupsInterleaved(NumpyNormFamily):
    """Groups split along the wrong axis: ``(N, C/G, G, ...)``, so channel ``c`` lands in group ``c % G``."""

    def gn_group(self, x, groups):
        n, c = x.shape[:2]
        return x.reshape(n, c // groups, groups, -1).transpose(0, 2, 1, 3).reshape(n * groups, -1)

    def gn_ungroup(self, x2, shape, groups):
        n, c = shape[:2]
        return x2.reshape(n, groups, c // groups, -1).transpose(0, 2, 1, 3).reshape(shape)


# ---- the backward passes ---------------------------------------------------------------------


class NormDxMissingMeanPath(NumpyNormFamily):
    def mean_path(self, dx_hat, axis):
        return 0.0


class NormDxMissingVariancePath(NumpyNormFamily):
    def variance_path(self, dx_hat, x_hat, axis):
        return 0.0
