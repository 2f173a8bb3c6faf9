r"""Batch normalization in Triton: a forward and a backward kernel for a CUDA GPU.

**The idea.** On a GPU the arithmetic of batch norm is free; the time is the memory traffic,
and the difficulty is the reduction: every feature's mean needs all ``m = N·L`` of its
values, and a GPU needs thousands of independent programs to keep busy. So the batch is cut
into tiles of ``BLOCK_M`` rows by ``BLOCK_C`` features, one program per tile:

1. **statistics** (:func:`_stats_kernel`): each program loads its tile once and reduces it,
   in registers, to a mean and a sum of squared deviations per feature (exact: the tile is
   in registers, so its two passes cost nothing). The partial results, one row per tile of
   rows, are merged by the law of total variance (:func:`merge_stats`: the same formula as
   :func:`bnlib.fused_numpy.merge_stats`), a small computation on ``(tiles, C)``;
2. **normalize** (:func:`_normalize_kernel`): each program loads its tile again and writes
   ``y = x·scale + shift``.

The backward pass has the same two steps: :func:`_backward_sums_kernel` reduces
``sum dy`` and ``sum dy·(x - mu)`` per tile, and :func:`_backward_dx_kernel` writes ``dx``.
That is eight transfers of tensors the size of ``x`` for a training step, the fewest for a
batch that does not fit in on-chip memory, as in :mod:`bnlib.fused_torch` and
:mod:`bnlib.fused_numpy`.

Layout: ``x`` is a contiguous ``(N, C)`` or ``(N, C, L)`` tensor. Row ``r`` of the reduction
(``0 <= r < m``) and feature ``c`` live at offset ``(r // L)·C·L + c·L + r % L``; for
``(N, C)``, ``L = 1`` (Triton specializes integer arguments equal to 1, so the division
disappears).

The file reads like Triton's layer-norm tutorial: the forward kernels, the backward kernels,
the autograd wrapper and layer, a test against ``torch.nn.BatchNorm1d``
(:func:`compare_with_torch`). The benchmark is the harness's, which times this layer beside
cuDNN's batch norm on a CUDA machine (larger batches with ``--shape``)::

    python -m bnlib.bench --device cuda --kernels triton --shape 65536,256 --shape 262144,256 --shape 16384,1024

The kernels run on CUDA; on a CPU, Triton's interpreter runs them (set ``TRITON_INTERPRET=1``
before this module is imported): slowly, but exactly, which is how the tests check them
without a GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "bnlib.triton needs Triton, an optional extra: pip install -e '.[triton]' "
        f"(the rest of bnlib works without it). The import failed with: {e}"
    ) from e

from bnlib import torch as bnt

__all__ = [
    "INTERPRETED",
    "tile_sizes",
    "merge_stats",
    "forward_train",
    "backward_train",
    "TritonBatchNormFunction",
    "BatchNorm1d",
    "compare_with_torch",
]

#: Whether Triton's interpreter runs the kernels (``TRITON_INTERPRET=1`` at import): then
#: they take CPU tensors. Otherwise they need CUDA tensors.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def tile_sizes(m: int, c: int) -> tuple[int, int]:
    """``(BLOCK_M, BLOCK_C)``: up to 64 features (contiguous in ``(N, C)``) by enough rows for 4,096 elements."""
    block_c = min(64, triton.next_power_of_2(c))
    block_m = min(max(16, 4096 // block_c), triton.next_power_of_2(m))
    return block_m, block_c


# --------------------------------------------------------------------------------------------
# The forward kernels.
# --------------------------------------------------------------------------------------------


@triton.jit
def _tile(M, C, L, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile: the offsets of its elements, their mask, its features and row count."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows[:, None] < M) & (cols[None, :] < C)
    offsets = (rows[:, None] // L) * C * L + cols[None, :] * L + rows[:, None] % L
    n = tl.minimum(M - tl.program_id(0) * BLOCK_M, BLOCK_M)
    return offsets, mask, cols, n


@triton.jit
def _stats_kernel(X, PART_MEAN, PART_M2, M, C, L, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per tile: the mean and the sum of squared deviations of each feature, into row ``program_id(0)``."""
    offsets, mask, cols, n = _tile(M, C, L, BLOCK_M, BLOCK_C)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(PART_MEAN.dtype.element_ty)
    mean = tl.sum(x, axis=0) / n
    d = tl.where(mask, x - mean[None, :], 0.0)
    m2 = tl.sum(d * d, axis=0)
    part = tl.program_id(0) * C + cols
    tl.store(PART_MEAN + part, mean, mask=cols < C)
    tl.store(PART_M2 + part, m2, mask=cols < C)


@triton.jit
def _normalize_kernel(X, Y, SCALE, SHIFT, M, C, L, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """``y = x·scale + shift`` on one tile, per feature ``scale = gamma/sqrt(var+eps)``, ``shift = beta - mu·scale``."""
    offsets, mask, cols, n = _tile(M, C, L, BLOCK_M, BLOCK_C)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(SCALE.dtype.element_ty)
    scale = tl.load(SCALE + cols, mask=cols < C, other=0.0)
    shift = tl.load(SHIFT + cols, mask=cols < C, other=0.0)
    y = x * scale[None, :] + shift[None, :]
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)


def merge_stats(part_mean: Tensor, part_m2: Tensor, m: int, block_m: int) -> tuple[Tensor, Tensor]:
    r"""The batch's mean and biased variance from the tiles': the law of total variance.

    Tile :math:`b` has :math:`n_b` rows (``block_m``, fewer in the last), mean :math:`\bar x_b`
    and :math:`M_{2,b}`; then :math:`\mu = \sum_b n_b \bar x_b / m` and
    :math:`\sigma^2 = \big(\sum_b M_{2,b} + \sum_b n_b(\bar x_b - \mu)^2\big)/m`.
    """
    tiles = part_mean.shape[0]
    counts = (m - torch.arange(tiles, device=part_mean.device) * block_m).clamp(max=block_m)
    counts = counts.to(part_mean.dtype)[:, None]
    mu = (counts * part_mean).sum(0) / m
    var = (part_m2.sum(0) + (counts * (part_mean - mu) ** 2).sum(0)) / m
    return mu, var


def _check_device(x: Tensor) -> None:
    if not INTERPRETED and not x.is_cuda:
        raise RuntimeError(
            "bnlib.triton's kernels run on a CUDA GPU; on a CPU, set TRITON_INTERPRET=1 before "
            "importing bnlib.triton to run them in Triton's interpreter"
        )


def _shape(x: Tensor) -> tuple[int, int, int]:
    """``(m, C, L)`` of a contiguous ``(N, C)`` or ``(N, C, L)`` tensor: ``m = N·L`` rows."""
    n, c = x.shape[0], x.shape[1]
    length = x.shape[2] if x.dim() == 3 else 1
    return n * length, c, length


def forward_train(
    x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training-mode batch norm with the two forward kernels.

    Args:
        x: ``(N, C)`` or ``(N, C, L)``, on CUDA (or the CPU, interpreted); made contiguous.
        gamma: ``(C,)`` or ``None``.
        beta: ``(C,)`` or ``None``.
        eps: added to the variance.

    Returns:
        ``(y, mu, var, istd)``: ``y`` like ``x``; the statistics, ``(C,)``, in float32 (float64
        for float64 input).
    """
    _check_device(x)
    x = x.contiguous()
    m, c, length = _shape(x)
    block_m, block_c = tile_sizes(m, c)
    grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c))
    part_mean = torch.empty(grid[0], c, device=x.device, dtype=bnt.compute_dtype(x.dtype))
    part_m2 = torch.empty_like(part_mean)
    _stats_kernel[grid](x, part_mean, part_m2, m, c, length, BLOCK_M=block_m, BLOCK_C=block_c)
    mu, var = merge_stats(part_mean, part_m2, m, block_m)
    istd = torch.rsqrt(var + eps)
    scale = istd if gamma is None else gamma.to(istd.dtype) * istd
    shift = -mu * scale if beta is None else beta.to(istd.dtype) - mu * scale
    y = torch.empty_like(x)
    _normalize_kernel[grid](x, y, scale, shift, m, c, length, BLOCK_M=block_m, BLOCK_C=block_c)
    return y, mu, var, istd


# --------------------------------------------------------------------------------------------
# The backward kernels.
# --------------------------------------------------------------------------------------------


@triton.jit
def _backward_sums_kernel(
    X, DY, MEAN, PART_DBETA, PART_DOT, M, C, L, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr
):
    """Per tile: ``sum dy`` and ``sum dy·(x - mu)`` of each feature, into row ``program_id(0)``."""
    offsets, mask, cols, n = _tile(M, C, L, BLOCK_M, BLOCK_C)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(MEAN.dtype.element_ty)
    dy = tl.load(DY + offsets, mask=mask, other=0.0).to(MEAN.dtype.element_ty)
    mean = tl.load(MEAN + cols, mask=cols < C, other=0.0)
    xmu = tl.where(mask, x - mean[None, :], 0.0)
    part = tl.program_id(0) * C + cols
    tl.store(PART_DBETA + part, tl.sum(dy, axis=0), mask=cols < C)
    tl.store(PART_DOT + part, tl.sum(dy * xmu, axis=0), mask=cols < C)


@triton.jit
def _backward_dx_kernel(
    X, DY, DX, MEAN, K, A, B, M, C, L, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr
):
    """``dx = k·dy + a·(x - mu) + b`` on one tile, per feature ``k``, ``a``, ``b`` (see :func:`backward_train`)."""
    offsets, mask, cols, n = _tile(M, C, L, BLOCK_M, BLOCK_C)
    x = tl.load(X + offsets, mask=mask, other=0.0).to(MEAN.dtype.element_ty)
    dy = tl.load(DY + offsets, mask=mask, other=0.0).to(MEAN.dtype.element_ty)
    mean = tl.load(MEAN + cols, mask=cols < C, other=0.0)
    k = tl.load(K + cols, mask=cols < C, other=0.0)
    a = tl.load(A + cols, mask=cols < C, other=0.0)
    b = tl.load(B + cols, mask=cols < C, other=0.0)
    dx = k[None, :] * dy + a[None, :] * (x - mean[None, :]) + b[None, :]
    tl.store(DX + offsets, dx.to(DX.dtype.element_ty), mask=mask)


def backward_train(
    dy: Tensor, x: Tensor, gamma: Tensor | None, mu: Tensor, istd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The backward pass of :func:`forward_train` with the two backward kernels.

    With :math:`k = \gamma/\sqrt{\sigma^2+\varepsilon}`, the compact formula of the chapter
    "The backward pass" is :math:`dx = k\,dy + a\,(x - \mu) + b` per feature, where
    :math:`a = -k\,\frac{1}{m}\sum dy\,\hat x\,/\sqrt{\sigma^2+\varepsilon}` and
    :math:`b = -k\,\frac{1}{m}\sum dy`.

    Returns:
        ``(dx, dgamma, dbeta)``: ``dx`` like ``x``; the ``(C,)`` sums in the statistics' dtype.
    """
    _check_device(x)
    x, dy = x.contiguous(), dy.contiguous()
    m, c, length = _shape(x)
    block_m, block_c = tile_sizes(m, c)
    grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c))
    part_dbeta = torch.empty(grid[0], c, device=x.device, dtype=mu.dtype)
    part_dot = torch.empty_like(part_dbeta)
    _backward_sums_kernel[grid](x, dy, mu, part_dbeta, part_dot, m, c, length, BLOCK_M=block_m, BLOCK_C=block_c)
    dbeta = part_dbeta.sum(0)
    dgamma = part_dot.sum(0) * istd  # sum dy·x_hat
    k = istd if gamma is None else gamma.to(istd.dtype) * istd
    a = -k * dgamma * istd / m
    b = -k * dbeta / m
    dx = torch.empty_like(x)
    _backward_dx_kernel[grid](x, dy, dx, mu, k, a, b, m, c, length, BLOCK_M=block_m, BLOCK_C=block_c)
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------------------------
# The autograd wrapper and the layer.
# --------------------------------------------------------------------------------------------


class TritonBatchNormFunction(torch.autograd.Function):
    """:func:`forward_train` and :func:`backward_train` under autograd.

    ``apply(x, gamma, beta, eps) -> (y, mu, var)``, the contract of
    :class:`bnlib.torch.BatchNormFunction`: ``mu`` and ``var`` are not differentiable.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float):
        y, mu, var, istd = forward_train(x, gamma, beta, eps)
        ctx.save_for_backward(x, gamma, mu, istd)
        ctx.mark_non_differentiable(mu, var)
        return y, mu, var

    @staticmethod
    def backward(ctx: Any, dy: Tensor, _dmu: Tensor | None, _dvar: Tensor | None):
        x, gamma, mu, istd = ctx.saved_tensors
        dx, dgamma, dbeta = backward_train(dy, x, gamma, mu, istd)
        return (*bnt.needed_grads(ctx, x, gamma, dx, dgamma, dbeta), None)


class BatchNorm1d(bnt.BatchNorm1d):
    """:class:`bnlib.torch.BatchNorm1d` whose training mode runs this module's Triton kernels.

    A drop-in for ``torch.nn.BatchNorm1d`` on a CUDA GPU (or on the CPU under
    ``TRITON_INTERPRET=1``); evaluation mode is :class:`bnlib.torch.FrozenBatchNormFunction`.
    """

    def _normalize_with_batch_stats(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return TritonBatchNormFunction.apply(x, self.weight, self.bias, self.eps)


# --------------------------------------------------------------------------------------------
# The test against PyTorch (the benchmark is the harness's: see the module's docstring).
# --------------------------------------------------------------------------------------------


def compare_with_torch(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: str | None = None, seed: int = 0
) -> dict[str, float]:
    """One training step of :class:`BatchNorm1d` and of ``torch.nn.BatchNorm1d`` from the same state.

    Inputs that tell right from wrong: a mean far from 0, a small variance, random ``dy``,
    random ``gamma``, ``beta`` and running statistics.

    Returns:
        The largest difference of ``y``, ``dx``, ``dgamma``, ``dbeta``, ``running_mean`` and
        ``running_var``, each divided by the largest magnitude of PyTorch's value.
    """
    device = device or ("cpu" if INTERPRETED else "cuda")
    generator = torch.Generator().manual_seed(seed)
    c = shape[1]
    reference = torch.nn.BatchNorm1d(c, eps=1e-3, dtype=dtype)
    with torch.no_grad():
        reference.weight.copy_(torch.rand(c, generator=generator) + 0.5)
        reference.bias.copy_(torch.randn(c, generator=generator))
        reference.running_mean.copy_(torch.randn(c, generator=generator))
        reference.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
    mine = BatchNorm1d(c, eps=1e-3, dtype=dtype)
    mine.load_state_dict(reference.state_dict())
    reference, mine = reference.to(device), mine.to(device)
    x = (torch.randn(shape, generator=generator, dtype=dtype) * 0.5 + 3).to(device)
    dy = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    results = []
    for layer in (reference, mine):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        dx, dgamma, dbeta = torch.autograd.grad(y, [xi, layer.weight, layer.bias], dy)
        results.append(dict(y=y.detach(), dx=dx, dgamma=dgamma, dbeta=dbeta,
                            running_mean=layer.running_mean, running_var=layer.running_var))
    want, got = results
    return {
        key: float((got[key].double() - want[key].double()).abs().max()
                   / want[key].double().abs().max().clamp(min=1e-30))
        for key in want
    }
