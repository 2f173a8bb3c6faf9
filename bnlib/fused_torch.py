r"""Batch normalization in PyTorch as four loops over memory: plain code, fused by ``torch.compile``.

**The idea.** Eager PyTorch runs one kernel per operation, and each kernel reads its inputs
from memory and writes its output back: :class:`bnlib.torch.BatchNormFunction` is careful,
and still makes about twenty trips over tensors the size of ``x`` per training step.
``torch.compile`` reads a whole function, sees which operations can share a loop, and emits
one loop for each group (C++ with OpenMP on a CPU, Triton on a GPU). Written plainly, batch
norm compiles into four loops:

==============  ========================================  ========================================
loop            reads and writes (tensors the size of x)  computes
==============  ========================================  ========================================
forward 1       read ``x``                                ``mu`` and ``var`` together
forward 2       read ``x``, write ``y``                   ``y = (x - mu)·istd·gamma + beta``
backward 1      read ``x``, ``dy``                        ``dbeta`` and ``dgamma`` together
backward 2      read ``x``, ``dy``, write ``dx``          ``dx``
==============  ========================================  ========================================

Eight transfers, the fewest for a batch that does not fit in cache (the statistics must be
complete before the first output can be written). The forward pass saves ``x``, ``mu`` and
``istd = 1/sqrt(var + eps)`` for the backward pass, and no tensor the size of ``x``
besides ``x`` itself: ``x_hat`` is recomputed where it is needed, which costs arithmetic,
not memory traffic. Compiled, ``y`` and ``dx`` are written into memory from
:func:`bnlib.torch.output_like` (``out=``), which on a CPU comes in huge pages.

:func:`forward_train` and :func:`backward_train` are the two functions ``torch.compile`` sees;
:class:`FusedBatchNormFunction` puts them under autograd, and :class:`BatchNorm1d` is
:class:`bnlib.torch.BatchNorm1d` using them. With ``compiled=False`` the same functions run
eagerly, one kernel per operation, which shows what the compiler buys (chapter "Benchmarks").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bnlib import torch as bnt
from bnlib.torch import batch_dims, per_feature

__all__ = [
    "ROWS",
    "RECOMPILE_LIMIT",
    "batch_sums",
    "forward_train",
    "backward_train",
    "compile_once",
    "FusedBatchNormFunction",
    "BatchNorm1d",
]


#: Rows per group when an ``(N, C)`` batch is summed (:func:`batch_sums`).
ROWS = 64


def batch_sums(*terms: Tensor) -> list[Tensor]:
    """Each term, ``(N, C)`` or ``(N, C, L)``, summed over the batch into ``(C,)``; compiled, one loop.

    Summing an ``(N, C)`` tensor over dimension 0, TorchInductor's loop walks memory column
    block by column block, a stride of ``C`` floats at every step. Viewed as groups of
    :data:`ROWS` rows, ``(N/ROWS, ROWS, C)``, each group is summed while it is in cache and
    memory is read in order; the ``N/ROWS`` partial sums are then added. ``(N, C, L)`` input
    (already contiguous along the reduction), ``N`` not divisible by :data:`ROWS` and small
    batches are summed directly.
    """
    x = terms[0]
    if x.dim() == 3 or x.shape[0] % ROWS != 0 or x.shape[0] < 2 * ROWS:
        return [t.sum(batch_dims(t)) for t in terms]
    return [t.view(-1, ROWS, t.shape[1]).sum(1).sum(0) for t in terms]


def forward_train(
    x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float, out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Training-mode batch norm: :math:`y = \gamma\,(x - \mu_B)/\sqrt{\sigma_B^2 + \varepsilon} + \beta`.

    Args:
        x: ``(N, C)`` or ``(N, C, L)``; half precision is computed in float32.
        gamma: ``(C,)`` or ``None`` (no scale).
        beta: ``(C,)`` or ``None`` (no shift).
        eps: added to the variance.
        out: where to write ``y`` (like ``x``), or ``None`` for a new tensor. Compiled, the loop
            that computes ``y`` stores straight into it.

    Returns:
        ``(y, mu, var, istd)``: ``y`` like ``x`` (``out`` if given); the batch mean, the biased batch variance
        and :math:`1/\sqrt{\sigma_B^2+\varepsilon}`, each ``(C,)`` in the compute dtype.
    """
    xc = x.to(bnt.compute_dtype(x.dtype))
    m = x.numel() // x.shape[1]
    # The statistics in one loop over x, from sums of x - k: k, the mean of the first rows, is
    # close to mu, so these sums stay small and var = E[d²] - E[d]² does not cancel.
    k = xc[:ROWS].mean(batch_dims(x))
    d = xc - per_feature(k, x)
    sum_d, sum_d2 = batch_sums(d, d * d)
    mean_d = sum_d / m
    mu = k + mean_d
    var = (sum_d2 / m - mean_d * mean_d).clamp(min=0)
    istd = torch.rsqrt(var + eps)
    x_hat = (xc - per_feature(mu, x)) * per_feature(istd, x)
    y = x_hat
    if gamma is not None:
        y = y * per_feature(gamma.to(xc.dtype), x)
    if beta is not None:
        y = y + per_feature(beta.to(xc.dtype), x)
    return _into(out, y.to(x.dtype)), mu, var, istd


def backward_train(
    dy: Tensor, x: Tensor, gamma: Tensor | None, mu: Tensor, istd: Tensor, out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The backward pass of :func:`forward_train`, the compact formula of the chapter "The backward pass".

    .. math::

        dx = \frac{\gamma}{\sqrt{\sigma_B^2+\varepsilon}}\Big(dy - \frac{1}{m}\sum dy
             - \hat x\,\frac{1}{m}\sum dy\,\hat x\Big)

    Args:
        dy: the upstream gradient, like ``x``.
        x: the forward pass's input.
        gamma: ``(C,)`` or ``None``.
        mu: the batch mean from :func:`forward_train`.
        istd: :math:`1/\sqrt{\sigma_B^2+\varepsilon}` from :func:`forward_train`.
        out: where to write ``dx`` (like ``x``), or ``None`` for a new tensor.

    Returns:
        ``(dx, dgamma, dbeta)``: ``dx`` like ``x`` (``out`` if given); ``dgamma`` and ``dbeta`` ``(C,)`` in the
        compute dtype.
    """
    m = x.numel() // x.shape[1]
    dyc = dy.to(mu.dtype)
    x_hat = (x.to(mu.dtype) - per_feature(mu, x)) * per_feature(istd, x)
    dbeta, dgamma = batch_sums(dyc, dyc * x_hat)  # one loop over x and dy
    k = istd if gamma is None else gamma.to(mu.dtype) * istd
    dx = per_feature(k, x) * (dyc - per_feature(dbeta / m, x) - x_hat * per_feature(dgamma / m, x))
    return _into(out, dx.to(x.dtype)), dgamma, dbeta


def _into(out: Tensor | None, value: Tensor) -> Tensor:
    """``value``, written into ``out`` when there is one (compiled, the write is the loop's own store)."""
    return value if out is None else out.copy_(value)


#: How many compiled versions of each function to keep (dtypes, ranks, and the size ranges
#: the compiler specializes on: batches below 64 or 128 rows, small and large reductions).
#: PyTorch's default, 8 per function, is too few for the benchmark's sweep.
RECOMPILE_LIMIT = 64


@functools.cache
def compile_once(fn: Callable) -> Callable:
    """``torch.compile(fn)``, made once per function (compiling happens at the first call).

    Each of :func:`forward_train` and :func:`backward_train` compiles into one graph (the
    tests check it with ``torch._dynamo.explain``), for any batch size (``dynamic=True``):
    only a new dtype, rank, ``None`` parameter or size range compiles again, up to
    :data:`RECOMPILE_LIMIT` versions; past it the function runs eagerly, slower but still
    right. The limit is this function's own (``torch.compile``'s ``recompile_limit``), read
    only when a call compiles, so a call that finds its version pays nothing for it (patching
    the global limit around every call would put a Python context manager in every call,
    which shows at small batch sizes). On a CPU this needs a C++ compiler; the first call
    for a new version takes seconds (the chapter "Benchmarks" times only later calls).
    """
    return torch.compile(fn, dynamic=True, recompile_limit=RECOMPILE_LIMIT)


class FusedBatchNormFunction(torch.autograd.Function):
    """:func:`forward_train` and :func:`backward_train` as an autograd function.

    ``apply(x, gamma, beta, eps, use_compiler) -> (y, mu, var)``, the contract of
    :class:`bnlib.torch.BatchNormFunction` plus ``use_compiler`` (run the compiled kernels,
    or the same functions eagerly).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float, use_compiler: bool):
        # Compiled, y is stored straight into memory from output_like (huge pages where the OS has them).
        run, out = (compile_once(forward_train), bnt.output_like(x)) if use_compiler else (forward_train, None)
        y, mu, var, istd = run(x, gamma, beta, eps, out)
        ctx.save_for_backward(x, gamma, mu, istd)
        ctx.use_compiler = use_compiler
        ctx.mark_non_differentiable(mu, var)
        ctx.set_materialize_grads(False)  # no zero tensors made for mu's and var's gradients
        return y, mu, var

    @staticmethod
    def backward(ctx: Any, dy: Tensor | None, _dmu: Tensor | None, _dvar: Tensor | None):
        if dy is None:  # only mu or var was used: they are constants, so every gradient is zero
            return None, None, None, None, None
        x, gamma, mu, istd = ctx.saved_tensors
        run, out = (compile_once(backward_train), bnt.output_like(x)) if ctx.use_compiler else (backward_train, None)
        dx, dgamma, dbeta = run(dy, x, gamma, mu, istd, out)
        return (*bnt.needed_grads(ctx, x, gamma, dx, dgamma, dbeta), None, None)


class BatchNorm1d(bnt.BatchNorm1d):
    r""":class:`bnlib.torch.BatchNorm1d` whose training mode runs the compiled kernels of this module.

    A drop-in for ``torch.nn.BatchNorm1d``: same constructor, semantics, state dict and
    evaluation mode, plus one keyword.

    Args:
        compiled: run :func:`forward_train` and :func:`backward_train` through ``torch.compile``; with
            ``False``, run them eagerly. Keyword only. Default: ``True``

    (The other arguments are those of :class:`bnlib.torch.BatchNorm1d`.)
    """

    def __init__(self, *args: Any, compiled: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compiled = compiled

    def _normalize_with_batch_stats(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return FusedBatchNormFunction.apply(x, self.weight, self.bias, self.eps, self.compiled)
