r"""The bn-torch wrong variants: ``BatchNormFunction`` and ``BatchNorm1d`` step by step, each mistake one step changed.

Two bases, both with PyTorch's semantics exactly when nothing is overridden
(``tests/test_mistakes.py`` checks it):

- :class:`FunctionSteps`: the arithmetic of the notebook's ``BatchNormFunction`` (``(m, C)``
  input, ``apply(x, gamma, beta, eps) -> y``, a hand-written backward); :func:`function_class`
  wraps an instance into a ``torch.autograd.Function`` named ``BatchNormFunction``;
- :class:`BatchNorm1d`: a drop-in ``nn.Module`` whose training forward calls its ``function``,
  with one method per decision a student makes (parameter names, buffers, the running
  variance, momentum, (N, C, L) input, evaluation mode, ...).

Each bn-torch mistake of the catalogue (:mod:`autograder.course.mistakes`) names a subclass of
one of them; :func:`build` puts the pair together. This module imports torch: the catalogue
imports it only when a bn-torch variant is built.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autograder.course.reference import torch_function
from bnlib import numpy as bn

__all__ = ["FunctionSteps", "function_class", "BatchNorm1d", "build"]


# ============================================================================================
# BatchNormFunction
# ============================================================================================


class FunctionSteps:
    """``BatchNormFunction``'s forward and backward for ``(m, C)`` input, one step per method."""

    def variance(self, xmu: torch.Tensor, m: int) -> torch.Tensor:
        """The variance that normalizes: the biased one."""
        return (xmu**2).sum(dim=0) / m

    def std(self, var: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.sqrt(var + eps)

    def forward(self, x, gamma, beta, eps: float) -> tuple[torch.Tensor, tuple]:
        """``(y, what the backward needs)``."""
        m = x.shape[0]
        mu = x.mean(dim=0)
        xmu = x - mu
        std = self.std(self.variance(xmu, m), eps)
        x_hat = xmu / std
        return bn.scale_shift(x_hat, gamma, beta), (xmu, x_hat, gamma, std)

    def dgamma(self, dy, x_hat) -> torch.Tensor:
        return (dy * x_hat).sum(dim=0)

    def variance_path(self, dx_hat, xmu, std, m: int) -> torch.Tensor:
        """What flows into ``xmu`` through the variance."""
        dvar = -0.5 * (dx_hat * xmu).sum(dim=0) / std**3
        return 2 * xmu * dvar / m

    def mean_path(self, dxmu, m: int) -> torch.Tensor:
        """What flows into ``x`` through the mean."""
        return -dxmu.sum(dim=0) / m

    def gradients(self, dx, dgamma, dbeta) -> tuple:
        """One gradient per input of ``forward(ctx, x, gamma, beta, eps)``: None for eps."""
        return dx, dgamma, dbeta, None

    def backward(self, dy, xmu, x_hat, gamma, std) -> tuple:
        m = dy.shape[0]
        dbeta = dy.sum(dim=0)
        dgamma = self.dgamma(dy, x_hat)
        dx_hat = dy * gamma
        dxmu = dx_hat / std + self.variance_path(dx_hat, xmu, std, m)
        dx = dxmu + self.mean_path(dxmu, m)
        return self.gradients(dx, dgamma, dbeta)


def function_class(steps: FunctionSteps) -> type:
    """A ``torch.autograd.Function`` called ``BatchNormFunction`` that computes with ``steps``."""

    class BatchNormFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, eps=1e-5):
            y, saved = steps.forward(x, gamma, beta, eps)
            ctx.save_for_backward(*saved)
            return y

        @staticmethod
        def backward(ctx, dy):
            return steps.backward(dy, *ctx.saved_tensors)

    return BatchNormFunction


class UnbiasedVarianceNormalizes(FunctionSteps):
    def variance(self, xmu, m):
        return (xmu**2).sum(dim=0) / (m - 1)


class EpsOutsideSqrt(FunctionSteps):
    def std(self, var, eps):
        return torch.sqrt(var) + eps


class DxMissingMeanPath(FunctionSteps):
    def mean_path(self, dxmu, m):
        return 0.0


class DxMissingVariancePath(FunctionSteps):
    def variance_path(self, dx_hat, xmu, std, m):
        return 0.0


class DgammaWrongAxis(FunctionSteps):
    def dgamma(self, dy, x_hat):
        return (dy * x_hat).sum(dim=1)


class BackwardMissingEpsGradient(FunctionSteps):
    def gradients(self, dx, dgamma, dbeta):
        return dx, dgamma, dbeta


# ============================================================================================
# BatchNorm1d
# ============================================================================================


class BatchNorm1d(nn.Module):
    """A drop-in ``nn.BatchNorm1d`` whose training forward is ``function.apply(x2d, gamma, beta, eps)``.

    ``function``: the ``BatchNormFunction`` it uses (set by :func:`build`).
    """

    function: Any = None
    #: The names of gamma and beta.
    weight_name, bias_name = "weight", "bias"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self._seen = 0
        if self.has_parameters():
            setattr(self, self.weight_name, nn.Parameter(torch.ones(num_features, **factory)))
            setattr(self, self.bias_name, nn.Parameter(torch.zeros(num_features, **factory)))
        else:
            self.register_parameter(self.weight_name, None)
            self.register_parameter(self.bias_name, None)
        if self.has_buffers():
            self.keep_buffer("running_mean", torch.zeros(num_features, **factory))
            self.keep_buffer("running_var", torch.ones(num_features, **factory))
            self.keep_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    # -- what the module holds -----------------------------------------------------------------

    def has_parameters(self) -> bool:
        return self.affine

    def has_buffers(self) -> bool:
        return self.track_running_stats

    def keep_buffer(self, name: str, value: torch.Tensor) -> None:
        self.register_buffer(name, value)

    # -- the running statistics ------------------------------------------------------------------

    def count_batch(self) -> None:
        self.num_batches_tracked += 1

    def cumulative_momentum(self) -> float:
        """The momentum of ``momentum=None``: the plain average of the batches so far."""
        return 1.0 / self._seen

    def running_variance(self, squares: torch.Tensor, m: int) -> torch.Tensor:
        """The unbiased batch variance, from the sum of squared deviations of ``m`` values."""
        return squares / (m - 1)  # a tensor division: a batch of one gives inf, no exception

    def weights(self, momentum: float) -> tuple[float, float]:
        """``(keep, new)``: the weights of the old running value and of the batch's."""
        return 1 - momentum, momentum

    def update(self, x2: torch.Tensor) -> None:
        """Fold the batch ``x2`` (``(m, C)``) into the running statistics."""
        with torch.no_grad():
            self.count_batch()
            self._seen += 1
            momentum = self.cumulative_momentum() if self.momentum is None else self.momentum
            m = x2.shape[0]
            mu = x2.mean(dim=0)
            var = self.running_variance(((x2 - mu) ** 2).sum(dim=0), m)
            keep, new = self.weights(momentum)
            self.running_mean.mul_(keep).add_(new * mu)
            self.running_var.mul_(keep).add_(new * var)

    # -- the forward pass ----------------------------------------------------------------------

    def to_2d(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` as it is; ``(N, C, L)`` as ``(N*L, C)``, channels last."""
        return x.transpose(1, 2).reshape(-1, self.num_features) if x.dim() == 3 else x

    def from_2d(self, y2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Back to the shape of ``x``."""
        if x.dim() != 3:
            return y2
        n, _, length = x.shape
        return y2.reshape(n, length, self.num_features).transpose(1, 2)

    def uses_batch_stats(self) -> bool:
        return self.training or self.running_mean is None

    def eval_statistics(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What evaluation normalizes with: the running statistics."""
        return self.running_mean, self.running_var

    def forward(self, x):
        c = self.num_features
        self._last_n = x.shape[0]
        x2 = self.to_2d(x)
        weight, bias = getattr(self, self.weight_name), getattr(self, self.bias_name)
        gamma = weight if weight is not None else torch.ones(c, dtype=x.dtype, device=x.device)
        beta = bias if bias is not None else torch.zeros(c, dtype=x.dtype, device=x.device)
        batch_stats = self.uses_batch_stats()
        if self.training and self.track_running_stats:
            self.update(x2)
        if batch_stats:
            y2 = self.function.apply(x2, gamma, beta, self.eps)
        else:
            mean, var = self.eval_statistics(x2)
            y2 = bn.scale_shift((x2 - mean) / torch.sqrt(var + self.eps), gamma, beta)
        return self.from_2d(y2, x)


class EvalUsesBatchStatistics(BatchNorm1d):
    def uses_batch_stats(self):
        return True


class BiasedRunningVar(BatchNorm1d):
    def running_variance(self, squares, m):
        return squares / m


class MomentumReversed(BatchNorm1d):
    def weights(self, momentum):
        return momentum, 1 - momentum


class NclReshapedWithoutTranspose(BatchNorm1d):
    def to_2d(self, x):
        return x.reshape(-1, self.num_features) if x.dim() == 3 else x

    def from_2d(self, y2, x):
        return y2.reshape(x.shape) if x.dim() == 3 else y2


class RunningVarUnbiasedWithN(BatchNorm1d):
    def running_variance(self, squares, m):
        n = self._last_n
        return squares / m * n / (n - 1)


class RunningStatsUpdatedInEval(BatchNorm1d):
    def eval_statistics(self, x2):
        old_mean, old_var = self.running_mean.clone(), self.running_var.clone()
        self.update(x2)
        return old_mean, old_var


class NumBatchesNotCounted(BatchNorm1d):
    def count_batch(self):
        pass


class MomentumNoneNotCumulative(BatchNorm1d):
    def cumulative_momentum(self):
        return 0.1


class ParametersMisnamed(BatchNorm1d):
    weight_name, bias_name = "gamma", "beta"


class BuffersNotRegistered(BatchNorm1d):
    def keep_buffer(self, name, value):
        setattr(self, name, value)


class TensorOnDefaultDevice(BatchNorm1d):
    def running_variance(self, squares, m):
        return squares / m * torch.full((self.num_features,), m / (m - 1), dtype=squares.dtype)


class UntrackedUsesRunningStats(BatchNorm1d):
    def has_buffers(self):
        return True


class AffineIgnored(BatchNorm1d):
    def has_parameters(self):
        return True


# ============================================================================================
# A variant: the pair
# ============================================================================================


def build(function: str = "", module: str = "BatchNorm1d") -> dict[str, Any]:
    """``BatchNormFunction`` and ``BatchNorm1d`` of a variant, by the names of their classes here.

    Args:
        function: a :class:`FunctionSteps` class; "" for bnlib's own BatchNormFunction (a
            variant of the module alone). Default: ""
        module: a :class:`BatchNorm1d` class, which is given the function. Default: the base.
    """
    fn = function_class(globals()[function]()) if function else torch_function()
    base = globals()[module]
    return {"BatchNormFunction": fn, "BatchNorm1d": type("BatchNorm1d", (base,), {"function": fn})}
