r"""Batch normalization in NumPy with fewer trips to memory: the work is done in cache-sized blocks.

**The idea.** NumPy runs one operation at a time over whole arrays. The staged layer's
``x_hat = (x - mu) / sqrt(var + eps)`` reads ``x`` and writes a temporary ``x - mu``, then
reads that back and writes ``x_hat``: every operation is a full pass over memory, and every
temporary is fresh memory the operating system must hand over page by page. When the batch
is larger than the cache, the passes, not the arithmetic, set the time.

This module does the same arithmetic on blocks of rows small enough to stay in the cache
(:data:`BLOCK_BYTES`). Inside a block, a chain of NumPy operations touches only cached
memory; main memory sees each element once per pass:

================  ===========================================  ==============================
pass              reads and writes of ``(m, C)`` arrays          what it computes
================  ===========================================  ==============================
forward 1         read ``x``                                   ``mu``, ``var`` (per block, then combined)
forward 2         read ``x``, write ``y``                      ``y = x·scale + shift``
backward 1        read ``x``, ``dy``                           ``dbeta``, ``dgamma``
backward 2        read ``x``, ``dy``, write ``dx``             ``dx``
================  ===========================================  ==============================

Eight array transfers for a training step, against about twenty for
:func:`bnlib.numpy.forward_train` followed by :func:`bnlib.numpy.backward_compact`, and no
temporary the size of ``x``. The statistics take one pass, not two: each block's mean and
sum of squared deviations are exact (two passes over a block that sits in cache), and the
blocks are merged with the law of total variance (:func:`merge_stats`), which keeps the
variance accurate where the one-pass ``E[x²] - E[x]²`` cancels.

The blocks of a pass are independent, so they are shared among threads (:data:`THREADS`):
NumPy lets go of Python's global interpreter lock inside its loops, so the threads run on
separate cores at the same time.

The forward pass keeps only ``x``, ``mu`` and ``1/sqrt(var + eps)``: not ``x - mu``, not
``x_hat``. :func:`forward_train` and :func:`backward_train` take ``out=`` to write into memory the
caller already holds (``backward_train(dy, cache, out=dy)`` overwrites ``dy`` with ``dx``, which is
safe); :class:`BatchNorm1d` is :class:`bnlib.numpy.BatchNorm1d` with these two kernels.
The chapter "Benchmarks" measures all of this against ``torch.nn.BatchNorm1d``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bnlib import numpy as bnp

__all__ = [
    "BLOCK_BYTES",
    "MAX_ROWS",
    "THREADS",
    "rows_per_block",
    "merge_stats",
    "batch_stats",
    "forward_train",
    "backward_train",
    "BatchNorm1d",
]

#: How many bytes of one ``(m, C)`` array a block holds. A pass holds up to four blocks at
#: once (``x``, ``dy``, the output and a scratch block): a few MiB, which stay in the last-level
#: cache. Smaller blocks mean more NumPy calls, each with a fixed cost of about a microsecond.
BLOCK_BYTES = 1024 * 1024


#: At most this many rows per block: NumPy sums a block's rows one after the other in the
#: array's dtype, so in float32 the rounding error of a block's sums grows with its length.
MAX_ROWS = 4096


def rows_per_block(x: np.ndarray, block_bytes: int = BLOCK_BYTES) -> int:
    """How many rows of ``x``, ``(m, C)``, fit in ``block_bytes``: between 1 and :data:`MAX_ROWS`."""
    return min(MAX_ROWS, max(1, block_bytes // max(1, x.shape[1] * x.itemsize)))


#: How many threads share a pass's blocks, by default: one per core.
THREADS = os.cpu_count() or 1


def _blocks(m: int, rows: int) -> list[slice]:
    return [slice(start, min(start + rows, m)) for start in range(0, m, rows)]


_pools: dict[int, ThreadPoolExecutor] = {}
_local = threading.local()


def _map(fn: Callable[[slice], Any], blocks: list[slice], threads: int | None) -> list[Any]:
    """``[fn(block) for block in blocks]``, on up to ``threads`` threads (a pool kept for reuse)."""
    threads = min(threads or THREADS, len(blocks))
    if threads <= 1:
        return [fn(block) for block in blocks]
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="bnlib-fused-numpy")
    return list(_pools[threads].map(fn, blocks))


def _scratch_like(a: np.ndarray) -> np.ndarray:
    """An uninitialised array shaped like ``a``, this thread's own, reused from call to call."""
    buffer = getattr(_local, "buffer", None)
    if buffer is None or buffer.size < a.size or buffer.dtype != a.dtype:
        buffer = _local.buffer = np.empty(a.size, a.dtype)
    return buffer[: a.size].reshape(a.shape)


# --------------------------------------------------------------------------------------------
# The statistics in one pass: exact per block, merged pairwise.
# --------------------------------------------------------------------------------------------


def merge_stats(
    counts: np.ndarray, means: np.ndarray, m2s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Merge per-block statistics into the batch's: the law of total variance.

    Block :math:`b` holds :math:`n_b` rows with mean :math:`\bar x_b` and sum of squared
    deviations :math:`M_{2,b} = \sum_{i \in b} (x_i - \bar x_b)^2`. With :math:`m = \sum_b n_b`:

    .. math::

        \mu_B = \frac{1}{m}\sum_b n_b\,\bar x_b, \qquad
        m\,\sigma_B^2 = \sum_b M_{2,b} + \sum_b n_b\,(\bar x_b - \mu_B)^2

    (the squared deviations within the blocks, plus those of the blocks' means). Every term
    is a sum of non-negative numbers: nothing cancels, unlike :math:`E[x^2] - E[x]^2`.

    Args:
        counts: rows per block, ``(B,)``.
        means: ``(B, C)``.
        m2s: ``(B, C)``.

    Returns:
        ``(mu, var)``, each ``(C,)``, in float64.
    """
    counts = np.asarray(counts, dtype=np.float64)[:, None]
    m = counts.sum()
    mu = (counts * means).sum(axis=0) / m
    var = (m2s.sum(axis=0) + (counts * (means - mu) ** 2).sum(axis=0)) / m
    return mu, var


def batch_stats(
    x: np.ndarray, block_bytes: int = BLOCK_BYTES, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""The batch mean :math:`\mu_B` and biased variance :math:`\sigma_B^2` in one pass over ``x``.

    Each block's mean (summed in float64) and sum of squared deviations are computed while
    the block is in cache; :func:`merge_stats` combines them in float64. The result has
    ``x``'s dtype.

    Args:
        x: ``(m, C)``, ``m >= 1``.
        block_bytes: the size of a block. Default: :data:`BLOCK_BYTES`
        threads: how many threads share the blocks. Default: :data:`THREADS`

    Returns:
        ``(mu, var)``, each ``(C,)``.
    """

    def block_stats(block: slice) -> tuple[np.ndarray, np.ndarray]:
        xb = x[block]
        mean = xb.mean(axis=0, dtype=np.float64)
        center = mean.astype(x.dtype)  # the mean, rounded to x's precision
        tmp = np.subtract(xb, center, out=_scratch_like(xb))
        m2 = np.einsum("ij,ij->j", tmp, tmp)  # sum of squares, no temporary
        m2 = m2 - len(xb) * (mean - center) ** 2  # about the exact mean, not the rounded one
        return mean, m2

    blocks = _blocks(x.shape[0], rows_per_block(x, block_bytes))
    means, m2s = zip(*_map(block_stats, blocks, threads), strict=True)
    counts = [block.stop - block.start for block in blocks]
    mu, var = merge_stats(counts, np.stack(means), np.stack(m2s))
    return mu.astype(x.dtype), var.astype(x.dtype)


# --------------------------------------------------------------------------------------------
# Forward and backward.
# --------------------------------------------------------------------------------------------


def _check_out(out: np.ndarray | None, like: np.ndarray, x: np.ndarray, name: str) -> np.ndarray:
    if out is None:
        return np.empty_like(like)
    if out.shape != like.shape or out.dtype != like.dtype:
        raise ValueError(
            f"out must have {name}'s shape {like.shape} and dtype {like.dtype}, got {out.shape} {out.dtype}"
        )
    if np.may_share_memory(out, x):
        raise ValueError("out must not overlap x: the backward pass reads x")
    return out


def forward_train(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float = 1e-5,
    *,
    out: np.ndarray | None = None,
    block_bytes: int = BLOCK_BYTES,
    threads: int | None = None,
) -> tuple[np.ndarray, bnp.Cache]:
    r"""Training-mode batch norm in two passes over ``x``: the statistics, then ``y``.

    :math:`y = \gamma\,(x - \mu_B)/\sqrt{\sigma_B^2 + \varepsilon} + \beta` is computed as
    :math:`y = x \cdot s + t` with the per-feature :math:`s = \gamma/\sqrt{\sigma_B^2+\varepsilon}`
    and :math:`t = \beta - \mu_B s`: one multiply and one add per element, on a block that is
    still in cache after the multiply.

    Args:
        x: ``(m, C)``.
        gamma: ``(C,)``.
        beta: ``(C,)``.
        eps: added to the variance. Default: 1e-5
        out: where to write ``y``, ``(m, C)`` and ``x``'s dtype; not ``x`` itself, which the
            backward pass needs. Default: ``None`` (a new array)
        block_bytes: Default: :data:`BLOCK_BYTES`
        threads: how many threads share the blocks. Default: :data:`THREADS`

    Returns:
        ``(y, cache)``. The :class:`bnlib.numpy.Cache` holds ``x``, ``mu``, ``var``, ``std``,
        ``istd``, ``gamma``, ``eps``; its ``(m, C)`` intermediates ``xmu`` and ``x_hat`` are
        ``None``, as :func:`backward_train` does not need them.
    """
    out = _check_out(out, x, x, "x")
    mu, var = batch_stats(x, block_bytes, threads)
    std = np.sqrt(var + eps)
    istd = (1 / std).astype(x.dtype)
    scale = gamma * istd
    shift = beta - mu * scale

    def normalize(block: slice) -> None:
        np.multiply(x[block], scale, out=out[block])
        np.add(out[block], shift, out=out[block])

    _map(normalize, _blocks(x.shape[0], rows_per_block(x, block_bytes)), threads)
    return out, bnp.Cache(x, mu, None, var, std, istd, None, gamma, eps, True)


def backward_train(
    dy: np.ndarray,
    cache: bnp.Cache,
    *,
    out: np.ndarray | None = None,
    block_bytes: int = BLOCK_BYTES,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The backward pass of :func:`forward_train` in two passes over ``x`` and ``dy``.

    The first pass sums :math:`\sum_i dy_i` (``dbeta``) and :math:`\sum_i dy_i (x_i - \mu_B)`
    (``dgamma`` times :math:`\sqrt{\sigma_B^2+\varepsilon}`). The second writes the compact
    formula of the chapter "The backward pass", with :math:`k = \gamma/\sqrt{\sigma_B^2+\varepsilon}`:

    .. math::

        dx_i = k\,\Big(dy_i - \frac{\sum_j dy_j}{m}\Big)
               - \frac{k}{m}\,\frac{\sum_j dy_j\hat x_j}{\sqrt{\sigma_B^2+\varepsilon}}\,(x_i - \mu_B)

    Args:
        dy: ``(m, C)``.
        cache: from :func:`forward_train` (or :func:`bnlib.numpy.forward_train`).
        out: where to write ``dx``; may be ``dy`` itself (each block of ``dy`` is read
            before its ``dx`` is written). Default: ``None`` (a new array)
        block_bytes: Default: :data:`BLOCK_BYTES`
        threads: how many threads share the blocks. Default: :data:`THREADS`

    Returns:
        ``(dx, dgamma, dbeta)``: ``(m, C)``, ``(C,)``, ``(C,)``.
    """
    x, mu, istd, gamma = cache.x, cache.mu, cache.istd, cache.gamma
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {dy.shape}, but x had shape {x.shape}")
    out = _check_out(out, dy, x, "dy")
    m = x.shape[0]
    blocks = _blocks(m, rows_per_block(x, block_bytes))

    def sums(block: slice) -> tuple[np.ndarray, np.ndarray]:
        tmp = np.subtract(x[block], mu, out=_scratch_like(x[block]))
        return dy[block].sum(axis=0), np.einsum("ij,ij->j", tmp, dy[block])  # sum dy, sum dy (x - mu)

    dbetas, dots = zip(*_map(sums, blocks, threads), strict=True)
    dbeta = np.sum(dbetas, axis=0, dtype=np.float64).astype(x.dtype)
    dgamma = (np.sum(dots, axis=0, dtype=np.float64) * istd).astype(x.dtype)  # sum dy x_hat
    # dx = k·dy + a·(x - mu) + b, per feature k, a, b
    k = gamma * istd
    a = -k * dgamma * istd / m
    b = -k * dbeta / m

    def gradient(block: slice) -> None:
        o = out[block]
        k_dy = np.multiply(dy[block], k, out=_scratch_like(o))  # read dy before out (maybe dy) is written
        np.subtract(x[block], mu, out=o)
        np.multiply(o, a, out=o)
        np.add(o, k_dy, out=o)
        np.add(o, b, out=o)

    _map(gradient, blocks, threads)
    return out, dgamma, dbeta


# --------------------------------------------------------------------------------------------
# The layer.
# --------------------------------------------------------------------------------------------


class BatchNorm1d(bnp.BatchNorm1d):
    r""":class:`bnlib.numpy.BatchNorm1d` with the blocked kernels of this module in training mode.

    Same constructor, semantics and state dict (those of ``torch.nn.BatchNorm1d``), plus
    ``threads``. Two differences, both for speed: the training-mode forward and backward are
    :func:`forward_train` and :func:`backward_train`, and the arithmetic is done in the
    layer's dtype (float32 for a float16 layer), not in float64. Like PyTorch, the layer
    keeps a reference to ``(N, C)`` input rather than a copy: changing ``x`` in place between
    ``forward`` and ``backward`` changes the gradient (PyTorch would raise; NumPy cannot
    tell). Evaluation mode is unchanged.

    Args:
        threads: how many threads share the blocks of a pass. Keyword only.
            Default: :data:`THREADS` (one per core)

    (The other arguments are those of :class:`bnlib.numpy.BatchNorm1d`.)
    """

    def __init__(self, *args: Any, threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads = threads

    def _forward_train(self, x, gamma, beta, eps):
        return forward_train(x, gamma, beta, eps, threads=self.threads)

    def _backward_train(self, dy, cache):
        return backward_train(dy, cache, threads=self.threads)

    def _to_compute(self, a: np.ndarray) -> np.ndarray:
        dtype = np.float32 if self.dtype == np.float16 else self.dtype
        return bnp.to_2d(a).astype(dtype, copy=False)
