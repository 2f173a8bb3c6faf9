r"""Finite-difference gradient checks, with a relative-error report per argument.

A hand-written backward pass is checked against the definition of the derivative. For a
function ``f`` and an upstream gradient ``dy``, the scalar :math:`L = \sum f(\ldots) \cdot dy`
has, for each entry :math:`a_j` of an argument, the centred difference

.. math::

    \frac{\partial L}{\partial a_j} \approx \frac{L(a_j + h) - L(a_j - h)}{2h},

whose error shrinks like :math:`h^2`. The report gives, per argument, the relative error
:math:`\lVert g - \tilde g\rVert / (\lVert g\rVert + \lVert \tilde g\rVert)` between the analytic
gradient ``g`` and the numerical one :math:`\tilde g`: about ``1e-8`` or less in float64 means
the backward pass is right; ``1e-2`` or more means it is wrong.

Pure NumPy: nothing here knows about batch normalization, so the graded notebooks can use
it in any environment. For torch layers use ``torch.autograd.gradcheck`` in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["numerical_gradient", "relative_error", "GradcheckReport", "check_gradients"]


def numerical_gradient(
    f: Callable[..., np.ndarray],
    args: Mapping[str, np.ndarray],
    name: str,
    dy: np.ndarray,
    h: float = 1e-6,
) -> np.ndarray:
    r"""The centred finite-difference gradient of :math:`\sum f(**args) \cdot dy` w.r.t. ``args[name]``.

    Args:
        f: called as ``f(**args)``; returns an array of ``dy``'s shape.
        args: the arguments, by name (float64 arrays for a meaningful check).
        name: which argument to differentiate.
        dy: the upstream gradient.
        h: the step. Default: 1e-6

    Returns:
        An array of ``args[name]``'s shape. ``args`` is left as it was.
    """
    values = {k: np.array(v, dtype=np.float64, copy=True) for k, v in args.items()}
    a = values[name]
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for j in range(flat.size):
        old = flat[j]
        flat[j] = old + h
        plus = np.sum(np.asarray(f(**values), dtype=np.float64) * dy)
        flat[j] = old - h
        minus = np.sum(np.asarray(f(**values), dtype=np.float64) * dy)
        flat[j] = old
        gflat[j] = (plus - minus) / (2 * h)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    r"""``‖analytic − numeric‖ / (‖analytic‖ + ‖numeric‖)``, and 0 when both are zero."""
    a = np.asarray(analytic, dtype=np.float64)
    b = np.asarray(numeric, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"gradient has shape {a.shape}, but its argument has shape {b.shape}")
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


@dataclass
class GradcheckReport:
    """Relative errors per argument, and the threshold they were judged against."""

    errors: dict[str, float]
    tol: float

    @property
    def ok(self) -> bool:
        """True when every argument's relative error is at most ``tol``."""
        return all(e <= self.tol for e in self.errors.values())

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        width = max(len(k) for k in self.errors) if self.errors else 4
        lines = [f"{'argument':<{width}}  relative error  verdict"]
        for k, e in self.errors.items():
            lines.append(f"{k:<{width}}  {e:14.2e}  {'ok' if e <= self.tol else 'WRONG'}")
        return "\n".join(lines)


def check_gradients(
    f: Callable[..., np.ndarray],
    args: Mapping[str, np.ndarray],
    dy: np.ndarray,
    grads: Mapping[str, np.ndarray],
    h: float = 1e-6,
    tol: float = 1e-7,
) -> GradcheckReport:
    """Compare analytic gradients with centred finite differences.

    Args:
        f: the forward function, called as ``f(**args)``.
        args: its arguments by name, float64.
        dy: the upstream gradient, ``f``'s output shape. Use a random one: with ``dy`` all
            ones, batch norm's ``dx`` is zero whatever the backward pass does.
        grads: the analytic gradients to check, by argument name (a subset of ``args``).
        h: the finite-difference step. Default: 1e-6
        tol: the largest relative error that passes. Default: 1e-7

    Returns:
        A :class:`GradcheckReport`; ``print`` it for the table, ``bool`` it for the verdict.

    Example:
        >>> from bnlib.numpy import forward_train, backward_compact
        >>> rng = np.random.default_rng(0)
        >>> x, g, b = rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=3)
        >>> dy = rng.normal(size=(5, 3))
        >>> y, cache = forward_train(x, g, b)
        >>> dx, dg, db = backward_compact(dy, cache)
        >>> f = lambda x, gamma, beta: forward_train(x, gamma, beta)[0]
        >>> bool(check_gradients(f, {"x": x, "gamma": g, "beta": b}, dy, {"x": dx, "gamma": dg, "beta": db}))
        True
    """
    unknown = set(grads) - set(args)
    if unknown:
        raise KeyError(f"gradients given for {sorted(unknown)}, which are not arguments of f")
    errors = {
        name: relative_error(g, numerical_gradient(f, args, name, dy, h)) for name, g in grads.items()
    }
    return GradcheckReport(errors, tol)
