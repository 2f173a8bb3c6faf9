r"""Batch normalization in NumPy: the book's equations as functions, and a layer built from them.

The equations are written for a mini-batch ``x`` of shape ``(m, C)``: ``m`` examples (the
batch size :math:`m`), ``C`` features. Each function below is one equation of the book,
with the book's symbols as variable names:

================================  =============================================  ===============
function                          equation                                       chapter
================================  =============================================  ===============
:func:`batch_mean`                :math:`\mu_B = \frac1m \sum_i x_i`              the batch mean
:func:`batch_var`                 :math:`\sigma_B^2 = \frac1m \sum_i (x_i-\mu_B)^2`  the batch variance
:func:`normalize`                 :math:`\hat x_i = (x_i-\mu_B)/\sqrt{\sigma_B^2+\varepsilon}`  normalization
:func:`scale_shift`               :math:`y_i = \gamma \otimes \hat x_i + \beta`   scale and shift
:func:`update_running_stats`      running averages for inference                 inference
:func:`backward_staged`           the chain rule, node by node                    the backward pass
:func:`backward_compact`          the simplified gradient                         the backward pass
================================  =============================================  ===============

:class:`BatchNorm1d` puts them together with exactly the semantics of PyTorch's
``torch.nn.BatchNorm1d``: it also takes ``(N, C, L)`` inputs, which it treats as
``m = N·L`` examples of ``C`` features.

At the end (chapters "Batch norm for convolutions" and "The normalization family"):
:class:`BatchNorm2d`, the same layer over the ``m = N·H·W`` positions of ``(N, C, H, W)``
inputs; :func:`normalize_rows` and :func:`normalize_rows_backward`, batch norm's
normalization with the axes swapped; and :class:`LayerNorm` and :class:`GroupNorm`, built
from them with the semantics of ``torch.nn.LayerNorm`` and ``torch.nn.GroupNorm``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "batch_mean",
    "batch_var",
    "normalize",
    "scale_shift",
    "unbiased_var",
    "update_running_stats",
    "Cache",
    "forward_train",
    "forward_eval",
    "backward_staged",
    "backward_compact",
    "backward_eval",
    "to_2d",
    "from_2d",
    "BatchNorm1d",
]


# --------------------------------------------------------------------------------------------
# The forward pass, one equation at a time. x: (m, C); statistics and parameters: (C,).
# --------------------------------------------------------------------------------------------


def batch_mean(x: np.ndarray) -> np.ndarray:
    r"""The mini-batch mean, :math:`\mu_B = \frac{1}{m}\sum_{i=1}^{m} x^{(i)}`.

    Args:
        x: a mini-batch, ``(m, C)``.

    Returns:
        ``mu``: one mean per feature, ``(C,)``.
    """
    m = x.shape[0]
    mu = x.sum(axis=0) / m
    return mu


def batch_var(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    r"""The biased mini-batch variance, :math:`\sigma_B^2 = \frac{1}{m}\sum_{i=1}^{m} (x^{(i)} - \mu_B)^2`.

    Divides by ``m``, not ``m - 1``: this is the variance of the batch itself, the one used
    to normalize (PyTorch's ``correction=0``). The running estimate stores the unbiased one
    (:func:`unbiased_var`).

    Args:
        x: a mini-batch, ``(m, C)``.
        mu: its mean, ``(C,)``.

    Returns:
        ``var``: one variance per feature, ``(C,)``.
    """
    m = x.shape[0]
    var = ((x - mu) ** 2).sum(axis=0) / m
    return var


def normalize(x: np.ndarray, mu: np.ndarray, var: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    r"""Zero-centre and scale to unit variance.

    .. math::

        \hat{x}^{(i)} = \frac{x^{(i)} - \mu_B}{\sqrt{\sigma_B^2 + \varepsilon}}

    ``eps`` sits inside the square root: it keeps the division finite when a feature is
    constant over the batch (``var == 0``).

    Args:
        x: ``(m, C)``.
        mu: ``(C,)``.
        var: ``(C,)``, the biased variance (or, in evaluation, the running variance).
        eps: added to the variance. Default: 1e-5

    Returns:
        ``x_hat``: ``(m, C)``.
    """
    x_hat = (x - mu) / np.sqrt(var + eps)
    return x_hat


def scale_shift(x_hat: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    r"""Scale and shift with the learned parameters, :math:`y^{(i)} = \gamma \otimes \hat{x}^{(i)} + \beta`.

    With :math:`\gamma = \sqrt{\sigma_B^2+\varepsilon}` and :math:`\beta = \mu_B` the layer gives
    back its input: batch normalization can learn to be the identity.

    Args:
        x_hat: ``(m, C)``.
        gamma: the scale, ``(C,)``.
        beta: the shift, ``(C,)``.

    Returns:
        ``y``: ``(m, C)``.
    """
    y = gamma * x_hat + beta
    return y


def unbiased_var(var: np.ndarray, m: int) -> np.ndarray:
    r"""Bessel's correction, :math:`\frac{m}{m-1}\sigma_B^2`: the unbiased estimate of the population variance.

    Args:
        var: the biased batch variance, ``(C,)``.
        m: the number of values each variance was computed from (``N`` or ``N·L``); at least 2.
    """
    return var * (m / (m - 1))


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    mu: np.ndarray,
    var: np.ndarray,
    m: int,
    momentum: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    r"""PyTorch's running averages.

    .. math::

        \text{new} = (1-\text{momentum})\cdot\text{old} + \text{momentum}\cdot\text{batch}

    The batch variance enters unbiased (:func:`unbiased_var`). PyTorch's ``momentum`` is the
    weight of the *new* batch; Keras calls ``1 - momentum`` its momentum. ``BatchNorm1d`` with
    ``momentum=None`` calls this with ``momentum = 1 / num_batches_tracked``, which makes the
    running statistics the plain average of all batches so far.

    Args:
        running_mean: ``(C,)``.
        running_var: ``(C,)``.
        mu: the batch mean, ``(C,)``.
        var: the biased batch variance, ``(C,)``.
        m: the number of values per feature in the batch (``N``, or ``N·L``).
        momentum: the new batch's weight. Default: 0.1

    Returns:
        New arrays ``(running_mean, running_var)``; the inputs are not modified.
    """
    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var = (1 - momentum) * running_var + momentum * unbiased_var(var, m)
    return running_mean, running_var


# --------------------------------------------------------------------------------------------
# Forward passes that keep what the backward pass needs.
# --------------------------------------------------------------------------------------------


class Cache(NamedTuple):
    r"""What a forward pass keeps for its backward pass; every node of the computational graph.

    The graph, in the order the book draws it::

        x ─► mu ─► xmu = x - mu ─► sq = xmu² ─► var ─► std = √(var+eps) ─► istd = 1/std
                    └───────────────────────────────────────────────► x_hat = xmu·istd ─► y = gamma·x_hat + beta
    """

    x: np.ndarray  #: the input, ``(m, C)``
    mu: np.ndarray  #: mean used to normalize, ``(C,)``
    xmu: np.ndarray  #: ``x - mu``, ``(m, C)``
    var: np.ndarray  #: variance used to normalize, ``(C,)``
    std: np.ndarray  #: ``sqrt(var + eps)``, ``(C,)``
    istd: np.ndarray  #: ``1 / std``, ``(C,)``
    x_hat: np.ndarray  #: normalized input, ``(m, C)``
    gamma: np.ndarray  #: the scale, ``(C,)``
    eps: float
    batch_stats: bool  #: True when mu and var came from this batch (training), False for running statistics


def _forward(x, gamma, beta, mu, var, eps, batch_stats) -> tuple[np.ndarray, Cache]:
    xmu = x - mu
    std = np.sqrt(var + eps)
    istd = 1 / std
    x_hat = xmu * istd
    y = scale_shift(x_hat, gamma, beta)
    return y, Cache(x, mu, xmu, var, std, istd, x_hat, gamma, eps, batch_stats)


def forward_train(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, Cache]:
    r"""Batch normalization with the batch's own statistics (training mode).

    Args:
        x: ``(m, C)``.
        gamma: ``(C,)``.
        beta: ``(C,)``.
        eps: Default: 1e-5

    Returns:
        ``(y, cache)``: the output ``(m, C)`` and the :class:`Cache` for :func:`backward_compact`
        or :func:`backward_staged`.
    """
    mu = batch_mean(x)
    var = batch_var(x, mu)
    return _forward(x, gamma, beta, mu, var, eps, batch_stats=True)


def forward_eval(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = 1e-5,
) -> tuple[np.ndarray, Cache]:
    r"""Batch normalization with the running statistics (evaluation mode).

    Nothing depends on the other examples in the batch: each output is an affine function
    of its own input.

    Returns:
        ``(y, cache)``; the cache's backward is :func:`backward_eval`.
    """
    return _forward(x, gamma, beta, running_mean, running_var, eps, batch_stats=False)


# --------------------------------------------------------------------------------------------
# The backward pass.
# --------------------------------------------------------------------------------------------


def backward_staged(dy: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The backward pass of :func:`forward_train`, one node of the graph at a time.

    Walks the :class:`Cache` graph from ``y`` back to ``x``; each line is the local
    derivative of one node times the gradient flowing into it. ``xmu`` and ``x`` receive
    gradient along two paths each, which are added.

    Args:
        dy: the upstream gradient :math:`\partial L/\partial y`, ``(m, C)``.
        cache: from :func:`forward_train`.

    Returns:
        ``(dx, dgamma, dbeta)``: ``(m, C)``, ``(C,)``, ``(C,)``.
    """
    x, mu, xmu, var, std, istd, x_hat, gamma, eps, _ = cache
    m = x.shape[0]
    # y = gamma * x_hat + beta
    dbeta = dy.sum(axis=0)
    dgamma = (dy * x_hat).sum(axis=0)
    dx_hat = dy * gamma
    # x_hat = xmu * istd: xmu's first path, and istd
    dxmu = dx_hat * istd
    distd = (dx_hat * xmu).sum(axis=0)
    # istd = 1 / std
    dstd = -distd / std**2
    # std = sqrt(var + eps)
    dvar = dstd / (2 * std)
    # var = sum(sq) / m
    dsq = np.ones_like(x) * dvar / m
    # sq = xmu ** 2: xmu's second path
    dxmu = dxmu + 2 * xmu * dsq
    # xmu = x - mu: x's first path, and mu
    dx = dxmu
    dmu = -dxmu.sum(axis=0)
    # mu = sum(x) / m: x's second path
    dx = dx + np.ones_like(x) * dmu / m
    return dx, dgamma, dbeta


def backward_compact(dy: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The backward pass of :func:`forward_train` in one formula.

    .. math::

        \frac{\partial L}{\partial x_i} = \frac{\gamma}{m\sqrt{\sigma_B^2+\varepsilon}}
        \Big(m\,\frac{\partial L}{\partial y_i} - \sum_j \frac{\partial L}{\partial y_j}
        - \hat{x}_i \sum_j \frac{\partial L}{\partial y_j}\hat{x}_j\Big)

    The two sums are ``dbeta`` and ``dgamma``: the gradient of ``x`` reuses them.

    Args:
        dy: ``(m, C)``.
        cache: from :func:`forward_train`.

    Returns:
        ``(dx, dgamma, dbeta)``: ``(m, C)``, ``(C,)``, ``(C,)``.
    """
    x_hat, gamma, istd = cache.x_hat, cache.gamma, cache.istd
    m = x_hat.shape[0]
    dbeta = dy.sum(axis=0)
    dgamma = (dy * x_hat).sum(axis=0)
    dx = (gamma * istd / m) * (m * dy - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def backward_eval(dy: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The backward pass of :func:`forward_eval` (frozen statistics).

    The running statistics are constants, so :math:`\partial L/\partial x_i =
    \gamma\,\partial L/\partial y_i / \sqrt{\sigma^2_{\text{running}}+\varepsilon}`: no sums over
    the batch, unlike training.

    Returns:
        ``(dx, dgamma, dbeta)``.
    """
    dbeta = dy.sum(axis=0)
    dgamma = (dy * cache.x_hat).sum(axis=0)
    dx = dy * (cache.gamma * cache.istd)
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------------------------
# (N, C, L) and (N, C, H, W) inputs: m = N·L or N·H·W examples of C features.
# --------------------------------------------------------------------------------------------


def to_2d(x: np.ndarray) -> np.ndarray:
    """View ``(N, C)`` as itself and ``(N, C, *)`` (``(N, C, L)``, ``(N, C, H, W)``) as ``(m, C)``: one row per example.

    ``m = N·L`` or ``N·H·W``: every position of every example is one example of ``C`` features.
    """
    if x.ndim == 2:
        return x
    c = x.shape[1]
    return np.moveaxis(x, 1, -1).reshape(-1, c)


def from_2d(y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`to_2d` for an array of the given original ``shape``."""
    if len(shape) == 2:
        return y
    n, c, *spatial = shape
    return np.ascontiguousarray(np.moveaxis(y.reshape(n, *spatial, c), -1, 1))


# --------------------------------------------------------------------------------------------
# The layer.
# --------------------------------------------------------------------------------------------

_FLOATS = (np.float16, np.float32, np.float64)


def _load_arrays(
    layer: Any, state_dict: Mapping[str, Any], strict: bool, shape_of: Any
) -> dict[str, np.ndarray]:
    """The entries of ``state_dict`` that ``layer.state_dict()`` has, checked, as NumPy arrays.

    Values may be arrays or tensors (a PyTorch layer's ``state_dict()`` as it is). With
    ``strict``, missing or unexpected keys raise ``KeyError``; a value whose shape is not
    ``shape_of(key)`` raises ``ValueError``. Nothing is returned unless every entry passes, so
    the layer can change only when everything loads.
    """
    expected, given = set(layer.state_dict()), set(state_dict)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if strict and (missing or unexpected):
        raise KeyError(
            f"state_dict does not match this {type(layer).__name__}: missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    loaded: dict[str, np.ndarray] = {}
    for key in sorted(expected & given):
        value = state_dict[key]
        if hasattr(value, "detach"):  # a torch tensor, without importing torch
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if value.shape != shape_of(key):
            raise ValueError(f"state_dict[{key!r}] has shape {value.shape}, expected {shape_of(key)}")
        loaded[key] = value
    return loaded


class BatchNorm1d:
    r"""Batch normalization over a 2D or 3D input, with exactly the semantics of ``torch.nn.BatchNorm1d``.

    .. math::

        y = \frac{x - \mu_B}{\sqrt{\sigma_B^2 + \varepsilon}} \cdot \gamma + \beta

    The mean and variance are computed per feature over the mini-batch (over ``N``, or over
    ``N`` and ``L``). Training normalizes with the biased variance, but stores the
    *unbiased* one in ``running_var``. ``momentum`` is the weight of the new batch,
    ``new = (1 - momentum)·old + momentum·batch``: this differs from optimizers and from
    Keras, whose momentum is the weight of the *old* value. ``momentum=None`` keeps a
    cumulative (plain) average over ``num_batches_tracked`` batches. In evaluation mode the
    running statistics are used and nothing depends on the rest of the batch. Derivations:
    the book's chapters on each equation, the backward pass and inference.

    Parameters, buffers, outputs and gradients have the layer's dtype (``float16`` input to a
    ``float32`` layer is returned as ``float16``, as PyTorch does for half precision); the
    arithmetic is done in float64 and rounded, so a ``float32`` layer is at least as accurate
    as PyTorch's (NumPy's sums over the batch axis are not pairwise, and would not be).
    One deliberate difference from PyTorch: input that raises an error leaves every
    attribute unchanged (PyTorch counts the failed batch in ``num_batches_tracked``).

    Args:
        num_features: ``C``, the number of features (channels).
        eps: added to the variance inside the square root. Default: 1e-5
        momentum: the new batch's weight in the running averages, or ``None`` for the
            cumulative average. Default: 0.1
        affine: learn ``gamma`` and ``beta``. Default: ``True``
        track_running_stats: keep running statistics for evaluation; when ``False`` the
            batch statistics are used in evaluation too, and the running buffers are
            ``None``. Default: ``True``
        dtype: the dtype of parameters and buffers, ``float32`` or ``float64`` (or
            ``float16``). Default: ``np.float32``
        bias: learn ``beta`` (only when ``affine``). Default: ``True``

    Shape:
        - Input: ``(N, C)`` or ``(N, C, L)``
        - Output: the same shape as the input.

    Raises:
        ValueError: for input that is not 2D or 3D ("expected 2D or 3D input (got 4D input)"),
            whose dimension 1 is not ``num_features``, or with one value per feature in
            training ("Expected more than 1 value per channel when training").
        TypeError: for input that is not floating point, or whose precision differs from
            the layer's.
    """

    # The training-mode kernels, ``(x, gamma, beta, eps) -> (y, cache)`` and
    # ``(dy, cache) -> (dx, dgamma, dbeta)`` on ``(m, C)`` arrays; the cache needs ``mu`` and
    # ``var``. bnlib.fused_numpy swaps in faster ones (and computes in the layer's dtype,
    # overriding ``_to_compute``).
    _forward_train = staticmethod(forward_train)
    _backward_train = staticmethod(backward_compact)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = np.float32,
        *,
        bias: bool = True,
    ) -> None:
        dtype = np.dtype(dtype)
        if dtype.type not in _FLOATS:
            raise TypeError(f"{type(self).__name__}'s dtype must be float16, float32 or float64, not {dtype}")
        if int(num_features) != num_features or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.dtype = dtype
        self.training = True
        self.gamma: np.ndarray | None = None
        self.beta: np.ndarray | None = None
        if affine:
            self.gamma = np.ones(num_features, dtype)
            self.beta = np.zeros(num_features, dtype) if bias else None
        self.running_mean: np.ndarray | None = None
        self.running_var: np.ndarray | None = None
        self.num_batches_tracked: int | None = None
        if track_running_stats:
            self.running_mean = np.zeros(num_features, dtype)
            self.running_var = np.ones(num_features, dtype)
            self.num_batches_tracked = 0
        self.dgamma: np.ndarray | None = None
        self.dbeta: np.ndarray | None = None
        self._cache: Cache | None = None
        self._shape: tuple[int, ...] | None = None
        self._in_dtype: np.dtype | None = None

    # -- modes and resets (as nn.Module) ------------------------------------------------------

    def train(self, mode: bool = True) -> BatchNorm1d:
        """Training mode: normalize with batch statistics and update the running ones."""
        self.training = bool(mode)
        return self

    def eval(self) -> BatchNorm1d:
        """Evaluation mode: normalize with the running statistics (if tracked)."""
        return self.train(False)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean = np.zeros(self.num_features, self.dtype)
            self.running_var = np.ones(self.num_features, self.dtype)
            self.num_batches_tracked = 0

    def reset_parameters(self) -> None:
        """Reset the running statistics, and ``gamma = 1``, ``beta = 0``."""
        self.reset_running_stats()
        if self.affine:
            self.gamma = np.ones(self.num_features, self.dtype)
            if self.beta is not None:
                self.beta = np.zeros(self.num_features, self.dtype)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.beta is not None}, "
            f"track_running_stats={self.track_running_stats})"
        )

    # -- forward and backward ----------------------------------------------------------------

    def _check_input_dim(self, x: np.ndarray) -> None:
        if x.ndim not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.ndim}D input)")

    def _check_input(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        self._check_input_dim(x)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"expected input with {self.num_features} features in dimension 1, "
                f"got shape {x.shape}"
            )
        if x.dtype.type not in _FLOATS:
            raise TypeError(f"{type(self).__name__} takes floating-point input, got {x.dtype}")
        if x.dtype != self.dtype and not (x.dtype == np.float16 and self.dtype == np.float32):
            raise TypeError(
                f"input dtype {x.dtype} does not match the layer's {self.dtype}: cast the input "
                f"or build the layer with dtype={x.dtype} (PyTorch raises here too)"
            )
        return x

    def _to_compute(self, a: np.ndarray) -> np.ndarray:
        """``a`` as ``(m, C)`` in the dtype the arithmetic is done in: a float64 copy."""
        return to_2d(a).astype(np.float64)

    def _uses_batch_stats(self) -> bool:
        return self.training or self.running_mean is None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize ``x``: ``(N, C)`` or ``(N, C, L)``; returns the same shape and dtype."""
        x = self._check_input(x)
        m = x.size // x.shape[1]  # N, N·L or N·H·W values per feature
        batch_stats = self._uses_batch_stats()
        if batch_stats and m == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.shape}"
            )
        if self.eps < 0 or (batch_stats and self.eps == 0):
            raise ValueError(f"batch_norm eps must be positive with batch statistics, got {self.eps}")
        # -- all checks passed: from here on, state may change --------------------------------
        x2 = self._to_compute(x)
        ones, zeros = np.ones(self.num_features, x2.dtype), np.zeros(self.num_features, x2.dtype)
        gamma = ones if self.gamma is None else self.gamma.astype(x2.dtype)
        beta = zeros if self.beta is None else self.beta.astype(x2.dtype)
        track = self.training and self.track_running_stats
        if track:
            self.num_batches_tracked += 1
        if m == 0:  # an empty batch: empty output, statistics untouched (as PyTorch)
            self._cache = None
            return np.empty_like(x)
        if batch_stats:
            y2, cache = self._forward_train(x2, gamma, beta, self.eps)
            if track:
                momentum = (
                    1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
                )
                running_mean, running_var = update_running_stats(
                    self.running_mean.astype(np.float64),
                    self.running_var.astype(np.float64),
                    cache.mu,
                    cache.var,
                    m,
                    momentum,
                )
                self.running_mean = running_mean.astype(self.dtype)
                self.running_var = running_var.astype(self.dtype)
        else:
            y2, cache = forward_eval(
                x2,
                gamma,
                beta,
                self.running_mean.astype(np.float64),
                self.running_var.astype(np.float64),
                self.eps,
            )
        self._cache, self._shape, self._in_dtype = cache, x.shape, x.dtype
        return from_2d(y2, x.shape).astype(x.dtype, copy=False)

    __call__ = forward

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradients of the last forward pass: returns ``dx``; sets ``dgamma`` and ``dbeta``.

        After a training-mode forward this is :func:`backward_compact`; after an
        evaluation-mode forward with running statistics, :func:`backward_eval`.

        Args:
            dy: the upstream gradient, the output's shape.
        """
        if self._cache is None:
            raise RuntimeError("call forward (on a non-empty batch) before backward")
        dy = np.asarray(dy)
        if dy.shape != self._shape:
            raise ValueError(f"dy has shape {dy.shape}, but the last output had shape {self._shape}")
        cache = self._cache
        dy2 = self._to_compute(dy)
        if cache.batch_stats:
            dx2, dgamma, dbeta = self._backward_train(dy2, cache)
        else:
            dx2, dgamma, dbeta = backward_eval(dy2, cache)
        self.dgamma = dgamma.astype(self.dtype) if self.gamma is not None else None
        self.dbeta = dbeta.astype(self.dtype) if self.beta is not None else None
        return from_2d(dx2, self._shape).astype(self._in_dtype, copy=False)

    # -- state dicts, under PyTorch's keys -----------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """The parameters and buffers under PyTorch's keys, as copies.

        Keys: ``weight`` (gamma), ``bias`` (beta), ``running_mean``, ``running_var``,
        ``num_batches_tracked`` (a 0-d ``int64`` array), the ones that exist.
        """
        state: dict[str, np.ndarray] = {}
        if self.gamma is not None:
            state["weight"] = self.gamma.copy()
        if self.beta is not None:
            state["bias"] = self.beta.copy()
        if self.track_running_stats:
            state["running_mean"] = self.running_mean.copy()
            state["running_var"] = self.running_var.copy()
            state["num_batches_tracked"] = np.array(self.num_batches_tracked, dtype=np.int64)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load ``weight``, ``bias``, running statistics and ``num_batches_tracked``.

        Takes NumPy arrays or tensors (a ``torch.nn.BatchNorm1d``'s ``state_dict()`` works
        as it is). With ``strict``, missing or unexpected keys raise ``KeyError``; a wrong
        shape raises ``ValueError``. Nothing is changed unless everything loads.
        """
        loaded = _load_arrays(
            self, state_dict, strict, lambda key: () if key == "num_batches_tracked" else (self.num_features,)
        )
        for key, value in loaded.items():
            if key == "num_batches_tracked":
                self.num_batches_tracked = int(value)
            else:
                attr = {"weight": "gamma", "bias": "beta"}.get(key, key)
                setattr(self, attr, value.astype(self.dtype, copy=True))


# ============================================================================================
# Batch norm for convolutions, and the normalization family (chapters "Batch norm for
# convolutions" and "The normalization family").
# ============================================================================================

__all__ += ["BatchNorm2d", "normalize_rows", "normalize_rows_backward", "LayerNorm", "GroupNorm"]


class BatchNorm2d(BatchNorm1d):
    r"""Batch normalization over a 4D input ``(N, C, H, W)``, with exactly the semantics of ``torch.nn.BatchNorm2d``.

    .. math::

        y = \frac{x - \mu_B}{\sqrt{\sigma_B^2 + \varepsilon}} \cdot \gamma + \beta

    A convolution applies the same filter at every position, so a channel's statistics are
    taken over every position of every example: :class:`BatchNorm1d` with the
    :math:`m = N \cdot H \cdot W` rows of :func:`to_2d`, one ``gamma`` and ``beta`` per
    channel. The running variance's Bessel factor is :math:`m/(m-1)` with that ``m``. Every
    equation, the backward pass (:func:`backward_compact` over those ``m`` rows), the running
    statistics, the dtype rules and the state dict are :class:`BatchNorm1d`'s. Derivation:
    the chapter "Batch norm for convolutions".

    Args:
        num_features: ``C``, the number of channels.
        eps: Default: 1e-5
        momentum: Default: 0.1
        affine: Default: ``True``
        track_running_stats: Default: ``True``
        dtype: Default: ``np.float32``
        bias: Default: ``True``

        (as :class:`BatchNorm1d`)

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)``

    Raises:
        ValueError: for input that is not 4D ("expected 4D input (got 3D input)"), and as
            :class:`BatchNorm1d` for the rest.
    """

    def _check_input_dim(self, x: np.ndarray) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected 4D input (got {x.ndim}D input)")


def normalize_rows(x2: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, Cache]:
    r"""Normalize each row of ``x2`` over its own values: the normalization of layer and group norm.

    .. math::

        \hat{x}_{rk} = \frac{x_{rk} - \mu_r}{\sqrt{\sigma_r^2 + \varepsilon}}, \qquad
        \mu_r = \frac1K \sum_k x_{rk}, \quad \sigma_r^2 = \frac1K \sum_k (x_{rk} - \mu_r)^2

    This is batch norm with the axes swapped: the ``K`` values of a row play the ``m``
    examples, and each row is one "feature". So it *is* :func:`forward_train` on
    ``x2.T`` with ``gamma = 1``, ``beta = 0``: the same biased variance, ``eps`` in the same
    place. The layers apply their own affine afterwards (per element for layer norm, per
    channel for group norm), which is why it is not the one inside.

    Args:
        x2: ``(R, K)``, ``R`` groups of ``K`` values each.
        eps: Default: 1e-5

    Returns:
        ``(x_hat, cache)``: ``x_hat`` ``(R, K)``; the cache (of the transposed problem) for
        :func:`normalize_rows_backward`.
    """
    r = x2.shape[0]
    x_hat_t, cache = forward_train(x2.T, np.ones(r, x2.dtype), np.zeros(r, x2.dtype), eps)
    return x_hat_t.T, cache


def normalize_rows_backward(dx_hat: np.ndarray, cache: Cache) -> np.ndarray:
    r"""The backward pass of :func:`normalize_rows`: ``dx`` from :math:`\partial\ell/\partial\hat{x}`.

    :func:`backward_compact` with :math:`\gamma = 1` and the ``K`` values of a row as its
    ``m`` examples, on the transposed problem:

    .. math::

        \frac{\partial \ell}{\partial x_{rk}} = \frac{1}{K\sqrt{\sigma_r^2+\varepsilon}}
        \Big(K\,\frac{\partial \ell}{\partial \hat{x}_{rk}} - \sum_{k'} \frac{\partial \ell}{\partial \hat{x}_{rk'}}
        - \hat{x}_{rk} \sum_{k'} \frac{\partial \ell}{\partial \hat{x}_{rk'}}\hat{x}_{rk'}\Big)

    The sums run over a row, not over the batch: the examples of a batch do not interact.

    Args:
        dx_hat: ``(R, K)``.
        cache: from :func:`normalize_rows`.

    Returns:
        ``dx``: ``(R, K)``.
    """
    dx_t, _, _ = backward_compact(dx_hat.T, cache)
    return dx_t.T


class _PerExampleNorm:
    """What layer norm and group norm share: parameters ``weight``/``bias`` of one shape, no buffers.

    Statistics come from each example alone, in training and evaluation alike, so
    ``train()``/``eval()`` only set ``training`` (as ``nn.Module`` does). Subclasses call
    :meth:`_init_params` with the parameters' shape, and write ``forward`` and ``backward``.
    """

    _param_shape: tuple[int, ...]

    def _init_params(self, shape: tuple[int, ...], affine: bool, bias: bool, dtype: Any) -> None:
        dtype = np.dtype(dtype)
        if dtype.type not in _FLOATS:
            raise TypeError(f"{type(self).__name__}'s dtype must be float16, float32 or float64, not {dtype}")
        self.dtype = dtype
        self._param_shape = shape
        self.training = True
        self.gamma: np.ndarray | None = None
        self.beta: np.ndarray | None = None
        if affine:
            self.gamma = np.ones(shape, dtype)
            self.beta = np.zeros(shape, dtype) if bias else None
        self.dgamma: np.ndarray | None = None
        self.dbeta: np.ndarray | None = None
        self._cache: Cache | None = None
        self._x_hat: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self._in_dtype: np.dtype | None = None

    def train(self, mode: bool = True):
        """Set ``training`` (the statistics are each example's in both modes)."""
        self.training = bool(mode)
        return self

    def eval(self):
        """``train(False)``: nothing changes in what is computed."""
        return self.train(False)

    def reset_parameters(self) -> None:
        """``gamma = 1``, ``beta = 0``."""
        if self.gamma is not None:
            self.gamma = np.ones(self._param_shape, self.dtype)
        if self.beta is not None:
            self.beta = np.zeros(self._param_shape, self.dtype)

    def _check_dtype(self, x: np.ndarray) -> None:
        if x.dtype.type not in _FLOATS:
            raise TypeError(f"{type(self).__name__} takes floating-point input, got {x.dtype}")
        if x.dtype != self.dtype and not (x.dtype == np.float16 and self.dtype == np.float32):
            raise TypeError(
                f"input dtype {x.dtype} does not match the layer's {self.dtype}: cast the input "
                f"or build the layer with dtype={x.dtype} (PyTorch raises here too)"
            )

    def _params(self) -> tuple[np.ndarray, np.ndarray]:
        """``gamma`` and ``beta`` in float64 (ones and zeros where there are none)."""
        gamma = np.ones(self._param_shape) if self.gamma is None else self.gamma.astype(np.float64)
        beta = np.zeros(self._param_shape) if self.beta is None else self.beta.astype(np.float64)
        return gamma, beta

    def _set_param_grads(self, dgamma: np.ndarray, dbeta: np.ndarray) -> None:
        self.dgamma = dgamma.reshape(self._param_shape).astype(self.dtype) if self.gamma is not None else None
        self.dbeta = dbeta.reshape(self._param_shape).astype(self.dtype) if self.beta is not None else None

    def _check_dy(self, dy: Any) -> np.ndarray:
        if self._shape is None:
            raise RuntimeError("call forward (on a non-empty batch) before backward")
        dy = np.asarray(dy)
        if dy.shape != self._shape:
            raise ValueError(f"dy has shape {dy.shape}, but the last output had shape {self._shape}")
        return dy.astype(np.float64)

    def state_dict(self) -> dict[str, np.ndarray]:
        """``weight`` (gamma) and ``bias`` (beta), the ones that exist, as copies: PyTorch's keys."""
        state: dict[str, np.ndarray] = {}
        if self.gamma is not None:
            state["weight"] = self.gamma.copy()
        if self.beta is not None:
            state["bias"] = self.beta.copy()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load ``weight`` and ``bias`` (arrays or tensors: the PyTorch layer's ``state_dict()`` as it is).

        With ``strict``, missing or unexpected keys raise ``KeyError``; a wrong shape raises
        ``ValueError``. Nothing is changed unless everything loads.
        """
        loaded = _load_arrays(self, state_dict, strict, lambda key: self._param_shape)
        loaded = {key: value.astype(self.dtype, copy=True) for key, value in loaded.items()}
        if "weight" in loaded:
            self.gamma = loaded["weight"]
        if "bias" in loaded:
            self.beta = loaded["bias"]


class LayerNorm(_PerExampleNorm):
    r"""Layer normalization, with exactly the semantics of ``torch.nn.LayerNorm``.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \cdot \gamma + \beta

    The mean and the biased variance are taken over the last ``D = len(normalized_shape)``
    dimensions of each example, separately for every example (and every leading position):
    nothing depends on the rest of the batch, there are no running statistics, and
    training and evaluation compute the same. ``gamma`` and ``beta`` have the shape
    ``normalized_shape``: one per *element*, not per channel. With ``x`` viewed as rows of
    ``K = prod(normalized_shape)`` values, this is :func:`normalize_rows` followed by
    :func:`scale_shift`.

    The backward pass, by the chain rule through the elementwise affine:
    :math:`\partial\ell/\partial\hat{x} = \gamma \otimes \partial\ell/\partial y`, then
    :func:`normalize_rows_backward` (the compact formula with the sums over each row);
    ``dgamma`` and ``dbeta`` sum :math:`\partial\ell/\partial y\otimes\hat{x}` and
    :math:`\partial\ell/\partial y` over the rows. Derivation: the chapter "The
    normalization family". Computation in float64; dtype rules as :class:`BatchNorm1d`.

    Args:
        normalized_shape: the trailing shape to normalize over, an ``int`` (the last
            dimension) or a tuple.
        eps: added to the variance inside the square root. Default: 1e-5
        elementwise_affine: learn ``gamma`` and ``beta``. Default: ``True``
        bias: learn ``beta`` (only with ``elementwise_affine``). Default: ``True``
        dtype: the parameters' dtype. Default: ``np.float32``

    Shape:
        - Input: ``(N, *)``, ending in ``normalized_shape``
        - Output: the same shape as the input.

    Raises:
        RuntimeError: for input that does not end in ``normalized_shape``, with PyTorch's
            message ("Given normalized_shape=[4], expected input with shape [*, 4], but got
            input of size[2, 3]").
        TypeError: for input that is not floating point, or whose precision differs from the
            layer's.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(d) for d in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self._init_params(self.normalized_shape, elementwise_affine, bias, dtype)

    def __repr__(self) -> str:
        return (
            f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.beta is not None})"
        )

    def _check_input(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        d = len(self.normalized_shape)
        if x.ndim < d or x.shape[x.ndim - d:] != self.normalized_shape:
            shape = list(self.normalized_shape)
            raise RuntimeError(
                f"Given normalized_shape={shape}, expected input with shape [*, "
                f"{', '.join(map(str, shape))}], but got input of size{list(x.shape)}"
            )
        self._check_dtype(x)
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize each example of ``x`` over its last dimensions; same shape and dtype."""
        x = self._check_input(x)
        d = len(self.normalized_shape)
        k = math.prod(self.normalized_shape)
        x2 = x.reshape(math.prod(x.shape[: x.ndim - d]), k).astype(np.float64)  # one row per example
        gamma, beta = self._params()
        self._shape, self._in_dtype = x.shape, x.dtype
        if x2.shape[0] == 0 or k == 0:  # nothing to normalize: empty output (as PyTorch)
            self._cache, self._x_hat = None, x2
            return np.empty_like(x)
        x_hat, self._cache = normalize_rows(x2, self.eps)
        self._x_hat = x_hat
        y2 = scale_shift(x_hat, gamma.reshape(-1), beta.reshape(-1))
        return y2.reshape(x.shape).astype(x.dtype, copy=False)

    __call__ = forward

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradients of the last forward pass: returns ``dx``; sets ``dgamma`` and ``dbeta``."""
        dy2 = self._check_dy(dy).reshape(self._x_hat.shape)
        gamma, _ = self._params()
        dbeta = dy2.sum(axis=0)
        dgamma = (dy2 * self._x_hat).sum(axis=0)
        if self._cache is None:
            dx2 = np.zeros_like(dy2)
        else:
            dx_hat = dy2 * gamma.reshape(-1)
            dx2 = normalize_rows_backward(dx_hat, self._cache)
        self._set_param_grads(dgamma, dbeta)
        return dx2.reshape(self._shape).astype(self._in_dtype, copy=False)


class GroupNorm(_PerExampleNorm):
    r"""Group normalization, with exactly the semantics of ``torch.nn.GroupNorm``.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \cdot \gamma + \beta

    The ``C`` channels are split into ``G = num_groups`` groups of ``C/G`` consecutive
    channels; each example's group is normalized over its ``(C/G)·H·W`` values (the mean
    and the biased variance), in training and evaluation alike: no running statistics, no
    dependence on the batch. Then each *channel* is scaled and shifted by its own ``gamma``
    and ``beta``. ``G = 1`` normalizes over the whole example, as layer norm over ``(C, H,
    W)`` does but with a per-channel affine; ``G = C`` is instance norm. With ``x`` viewed
    as ``N·G`` rows of ``(C/G)·H·W`` values it is :func:`normalize_rows`, then the
    :func:`scale_shift` of the ``(m, C)`` view of :func:`to_2d`.

    The backward pass: ``dbeta`` and ``dgamma`` sum :math:`\partial\ell/\partial y` and
    :math:`\partial\ell/\partial y\otimes\hat{x}` over every position of every example per
    channel; :math:`\partial\ell/\partial\hat{x} = \gamma_c\,\partial\ell/\partial y`, then
    :func:`normalize_rows_backward` per group. Derivation: the chapter "The normalization
    family". Computation in float64; dtype rules as :class:`BatchNorm1d`.

    Args:
        num_groups: ``G``, which must divide ``num_channels``.
        num_channels: ``C``.
        eps: added to the variance inside the square root. Default: 1e-5
        affine: learn a per-channel ``gamma`` and ``beta``. Default: ``True``
        dtype: the parameters' dtype. Default: ``np.float32``
        bias: learn ``beta`` (only with ``affine``). Default: ``True``

    Shape:
        - Input: ``(N, C, *)``
        - Output: the same shape as the input.

    Raises:
        ValueError: at construction, when ``num_groups`` does not divide ``num_channels``
            ("num_channels (4) must be divisible by num_groups (3)"), or is not positive; in the
            forward pass, when there is one value per group in the whole batch (PyTorch's
            "Expected more than 1 value per channel when training").
        RuntimeError: for input with fewer than 2 dimensions, or whose dimension 1 is not
            ``num_channels`` (PyTorch's messages).
        TypeError: for input that is not floating point, or whose precision differs.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        dtype: Any = np.float32,
        *,
        bias: bool = True,
    ) -> None:
        if int(num_groups) != num_groups or num_groups < 1:
            raise ValueError(f"num_groups must be a positive integer, got {num_groups!r}")
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = eps
        self.affine = affine
        self._init_params((self.num_channels,), affine, bias, dtype)

    def __repr__(self) -> str:
        return (
            f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
            f"affine={self.affine}, bias={self.beta is not None})"
        )

    def _check_input(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim < 2:
            raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {x.ndim}")
        n, c, *spatial = x.shape
        sizes = [n * c // self.num_groups, self.num_groups, *spatial]
        if sizes[0] * math.prod(spatial) == 1:  # PyTorch's _verify_batch_size, in both modes
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {sizes}")
        if c != self.num_channels:
            raise RuntimeError(
                f"Expected weight to be a vector of size equal to the number of channels in input, "
                f"but got weight of shape [{self.num_channels}] and input of shape {list(x.shape)}"
            )
        self._check_dtype(x)
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalize each group of channels of each example; same shape and dtype."""
        x = self._check_input(x)
        gamma, beta = self._params()
        self._shape, self._in_dtype = x.shape, x.dtype
        if x.size == 0:  # an empty batch: empty output (as PyTorch)
            self._cache, self._x_hat = None, np.zeros(x.shape)
            return np.empty_like(x)
        groups = x.reshape(x.shape[0] * self.num_groups, -1).astype(np.float64)  # (N·G, (C/G)·H·W)
        x_hat_rows, self._cache = normalize_rows(groups, self.eps)
        self._x_hat = x_hat_rows.reshape(x.shape)
        y2 = scale_shift(to_2d(self._x_hat), gamma, beta)
        return from_2d(y2, x.shape).astype(x.dtype, copy=False)

    __call__ = forward

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradients of the last forward pass: returns ``dx``; sets ``dgamma`` and ``dbeta``."""
        dy = self._check_dy(dy)
        gamma, _ = self._params()
        dy2, x_hat2 = to_2d(dy), to_2d(self._x_hat)
        dbeta = dy2.sum(axis=0)
        dgamma = (dy2 * x_hat2).sum(axis=0)
        if self._cache is None:
            dx = np.zeros(self._shape)
        else:
            dx_hat = from_2d(dy2 * gamma, self._shape)
            dx = normalize_rows_backward(dx_hat.reshape(self._shape[0] * self.num_groups, -1), self._cache)
        self._set_param_grads(dgamma, dbeta)
        return dx.reshape(self._shape).astype(self._in_dtype, copy=False)
