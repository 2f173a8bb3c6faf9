r"""The graded notebooks' interface, implemented with bnlib: the answers students are compared with.

Students write these names (:data:`autograder.course.spec.INTERFACE`), with these signatures, in
the four assignments (the notebooks in ``solutions/`` implement them from scratch):

=====================  ==============================================================================
assignment             the student's names
=====================  ==============================================================================
``bn-numpy-forward``   ``bn_forward_train(x, gamma, beta, eps=1e-5) -> (y, cache)``,
                       ``bn_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5) -> y``,
                       ``update_running_stats(running_mean, running_var, x, momentum=0.1)
                       -> (running_mean, running_var)``
``bn-numpy-backward``  ``bn_forward_train`` (as above, any cache layout),
                       ``bn_backward_staged(dy, cache) -> (dx, dgamma, dbeta)``,
                       ``bn_backward_compact(dy, cache) -> (dx, dgamma, dbeta)``
``bn-torch``           ``BatchNormFunction`` (``apply(x, gamma, beta, eps) -> y``, a hand-written
                       backward), ``BatchNorm1d`` (a drop-in ``nn.BatchNorm1d``)
``bn-conv``            ``batchnorm2d_forward_train(x, gamma, beta, eps=1e-5) -> (y, cache)``, x
                       ``(N, C, H, W)``; ``layernorm_forward(x, gamma, beta, eps=1e-5) -> (y, cache)``,
                       x ``(N, D)``; ``groupnorm_forward(x, num_groups, gamma, beta, eps=1e-5)
                       -> (y, cache)``, x ``(N, C, H, W)``; and for each, ``<name>_backward(dy, cache)
                       -> (dx, dgamma, dbeta)``
=====================  ==============================================================================

:func:`reference` returns the names of one assignment bound to bnlib's implementation; the
judge runs its scenarios on them. :mod:`autograder.course.mistakes` binds the same names to known wrong
variants. x is ``(N, D)`` in the first two NumPy assignments; ``(N, C)`` or ``(N, C, L)`` in
``bn-torch``. In ``bn-conv`` the cache is bnlib's layer itself, after its training-mode forward pass
(:class:`bnlib.numpy.BatchNorm2d`, :class:`~bnlib.numpy.LayerNorm`, :class:`~bnlib.numpy.GroupNorm`,
in float64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autograder.course.spec import ASSIGNMENTS, INTERFACE
from bnlib import numpy as bn

__all__ = ["reference", "torch_function"]



def bn_forward_train(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, bn.Cache]:
    """Training-mode forward, ``x: (N, D)``: :func:`bnlib.numpy.forward_train`."""
    return bn.forward_train(x, gamma, beta, eps)


def bn_forward_eval(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = 1e-5,
) -> np.ndarray:
    """Evaluation-mode forward: :func:`bnlib.numpy.forward_eval`'s output."""
    return bn.forward_eval(x, gamma, beta, running_mean, running_var, eps)[0]


def update_running_stats(
    running_mean: np.ndarray, running_var: np.ndarray, x: np.ndarray, momentum: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The running averages after the batch ``x: (N, D)``: :func:`bnlib.numpy.update_running_stats`."""
    mu = bn.batch_mean(x)
    var = bn.batch_var(x, mu)
    return bn.update_running_stats(running_mean, running_var, mu, var, x.shape[0], momentum)


bn_backward_staged = bn.backward_staged
bn_backward_compact = bn.backward_compact


def _with_params(layer, gamma: np.ndarray, beta: np.ndarray):
    """``layer`` with float64 copies of ``gamma`` and ``beta`` as its parameters."""
    layer.gamma = np.array(gamma, dtype=np.float64)
    layer.beta = np.array(beta, dtype=np.float64)
    return layer


def _layer_backward(dy: np.ndarray, layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` of a bnlib layer's last forward pass."""
    dx = layer.backward(dy)
    return dx, layer.dgamma, layer.dbeta


def batchnorm2d_forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                              eps: float = 1e-5) -> tuple[np.ndarray, bn.BatchNorm2d]:
    """Training-mode BatchNorm2d, ``x: (N, C, H, W)``: :class:`bnlib.numpy.BatchNorm2d`; the layer is the cache."""
    layer = _with_params(bn.BatchNorm2d(x.shape[1], eps=eps, dtype=np.float64), gamma, beta)
    return layer.forward(x), layer


def layernorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      eps: float = 1e-5) -> tuple[np.ndarray, bn.LayerNorm]:
    """Layer norm of each example of ``x: (N, D)``: :class:`bnlib.numpy.LayerNorm`; the layer is the cache."""
    layer = _with_params(bn.LayerNorm(x.shape[1], eps=eps, dtype=np.float64), gamma, beta)
    return layer.forward(x), layer


def groupnorm_forward(x: np.ndarray, num_groups: int, gamma: np.ndarray, beta: np.ndarray,
                      eps: float = 1e-5) -> tuple[np.ndarray, bn.GroupNorm]:
    """Group norm, ``x: (N, C, H, W)``: :class:`bnlib.numpy.GroupNorm`; the layer is the cache."""
    layer = _with_params(bn.GroupNorm(num_groups, x.shape[1], eps=eps, dtype=np.float64), gamma, beta)
    return layer.forward(x), layer


batchnorm2d_backward = layernorm_backward = groupnorm_backward = _layer_backward


def torch_function(base: Any = None) -> type:
    """``BatchNormFunction`` with the notebook's interface, ``apply(x, gamma, beta, eps) -> y``.

    bnlib's :class:`bnlib.torch.BatchNormFunction` also returns the batch statistics; the
    notebook's returns ``y`` alone. ``base``: another function with bnlib's interface.
    """
    if base is None:
        from bnlib.torch import BatchNormFunction as base  # noqa: PLC0415 - torch: bn-torch only

    class BatchNormFunction:
        """bnlib's BatchNormFunction, returning y only (its backward node keeps bnlib's name)."""

        @staticmethod
        def apply(x, gamma, beta, eps=1e-5):
            return base.apply(x, gamma, beta, eps)[0]

    return BatchNormFunction


def reference(assignment: str) -> dict[str, Any]:
    """The student interface of ``assignment``, implemented by bnlib (a fresh dict each call).

    Raises:
        KeyError: for an unknown assignment.
    """
    if assignment not in INTERFACE:
        raise KeyError(f"unknown assignment {assignment!r}; the assignments are {ASSIGNMENTS}")
    if assignment == "bn-torch":
        from bnlib.torch import BatchNorm1d  # noqa: PLC0415 - torch: bn-torch only

        return {"BatchNormFunction": torch_function(), "BatchNorm1d": BatchNorm1d}
    names = {
        "bn_forward_train": bn_forward_train,
        "bn_forward_eval": bn_forward_eval,
        "update_running_stats": update_running_stats,
        "bn_backward_staged": bn_backward_staged,
        "bn_backward_compact": bn_backward_compact,
        "batchnorm2d_forward_train": batchnorm2d_forward_train,
        "batchnorm2d_backward": batchnorm2d_backward,
        "layernorm_forward": layernorm_forward,
        "layernorm_backward": layernorm_backward,
        "groupnorm_forward": groupnorm_forward,
        "groupnorm_backward": groupnorm_backward,
    }
    return {k: names[k] for k in INTERFACE[assignment]}
