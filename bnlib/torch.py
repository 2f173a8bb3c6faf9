r"""Batch normalization in PyTorch, forward and backward by hand: a drop-in ``nn.BatchNorm1d``.

:class:`BatchNormFunction` is the training-mode operation (batch statistics) as a
``torch.autograd.Function`` whose backward is the book's compact formula;
:class:`FrozenBatchNormFunction` is the evaluation-mode one (running statistics, which are
constants). :class:`BatchNorm1d` is an ``nn.Module`` with the constructor, parameters,
buffers, ``repr`` and ``state_dict`` of ``torch.nn.BatchNorm1d`` (torch 2.13) that uses them.
None of it calls PyTorch's own batch norm. Everything runs on the device of its tensors.

At the end (chapter "Batch norm at scale and in deployment"): :class:`SyncBatchNorm`, a
drop-in for ``torch.nn.SyncBatchNorm`` that normalizes a batch split between processes as
one batch, on CPU (gloo) or GPU (nccl), with :func:`convert_sync_batchnorm`; and the
folding of evaluation-mode batch norm into the linear layer or convolution next to it
(:func:`fold_into_linear`, :func:`fold_into_conv`, :func:`fold_into_next_linear`,
:func:`fold_batch_norms`).

After them (chapters "Batch norm for convolutions" and "The normalization family"):
:class:`BatchNorm2d`, the same functions over ``(N, C, H, W)``; :class:`LayerNorm` and
:class:`GroupNorm`, drop-ins for ``nn.LayerNorm`` and ``nn.GroupNorm`` whose
:class:`LayerNormFunction` and :class:`GroupNormFunction` normalize rows of values
(:func:`normalize_rows`) and have hand-written backward passes.

Shapes: ``x`` is ``(N, C)`` or ``(N, C, L)`` (``(N, C, H, W)`` for :class:`BatchNorm2d`);
statistics and parameters are ``(C,)``; the reduction is over every dimension but 1, so
``m = N``, ``m = N·L`` or ``m = N·H·W``.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "BatchNormFunction",
    "FrozenBatchNormFunction",
    "BatchNorm1d",
    "compute_dtype",
    "batch_dims",
    "per_feature",
    "needed_grads",
    "HUGE_PAGE_BYTES",
    "output_like",
    "out_for",
    "update_running_stats",
    "cast",
    "constant",
]


def batch_dims(x: Tensor) -> int | list[int]:
    """The dimensions statistics are taken over: all but the feature dimension 1 (``0``, ``[0, 2]``, ...).

    (For ``(N, C)``, the int ``0``: PyTorch reads an int faster than a list, about 1.5 µs a call.)
    """
    return 0 if x.dim() == 2 else [0, *range(2, x.dim())]


def per_feature(v: Tensor, x: Tensor) -> Tensor:
    """Shape a ``(C,)`` vector to broadcast against ``x``: ``(1, C, 1)``, ``(1, C, 1, 1)``; ``v`` for ``(N, C)``.

    (A ``(C,)`` vector already broadcasts along the rows of ``(N, C)``: no view, one call fewer.)
    """
    return v if x.dim() == 2 else v.view(1, -1, *[1] * (x.dim() - 2))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are computed in: float32 for half precision, else ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


#: Outputs of at least this many bytes on a CPU are allocated by NumPy (:func:`output_like`):
#: NumPy asks Linux for huge pages for arrays from 4 MiB on.
HUGE_PAGE_BYTES = 4 * 2**20

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def constant(value: float, like: Tensor) -> Tensor:
    """``value`` as a 0-dim CPU tensor in ``like``'s dtype, made once and then reused.

    An operation with a Python number wraps it in a new tensor at every call; with this one it
    costs about 2 µs less on a CPU, which counts for small batches, where each operation's
    fixed cost is most of its time. The tensor is on the CPU whatever ``like``'s device: a 0-dim
    CPU tensor enters a GPU operation as a number does, with no copy to the GPU. Nothing may
    write into it. Under ``torch.compile`` a new one is made instead (the compiler does not
    trace into a cache, and folds the number into its code anyway).
    """
    if torch.compiler.is_compiling():
        return torch.tensor(value, dtype=like.dtype)
    return _constant(value, like.dtype)


@functools.lru_cache(maxsize=256)
def _constant(value: float, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False):  # a tensor made in inference mode could never be saved for backward
        return torch.tensor(value, dtype=dtype)


def cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype``: ``t`` itself when it already is (``Tensor.to`` is a call even then)."""
    return t if t.dtype == dtype else t.to(dtype)


def output_like(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """A new, uninitialised tensor of ``x``'s shape (contiguous) for a kernel to write its output into.

    The first write to new memory costs more than the computation of batch norm itself on a
    CPU: the operating system hands it over page by page, and PyTorch's allocator asks for
    4 KiB pages (2 MiB ones only with ``THP_MEM_ALLOC_ENABLE=1``). NumPy asks Linux for 2 MiB
    pages for arrays of :data:`HUGE_PAGE_BYTES` and more, a 512th as many page faults, so
    large CPU outputs in float32, float64 or float16 are NumPy arrays seen as tensors
    (``torch.from_numpy``, no copy). Like any tensor whose memory NumPy owns, their storage
    cannot be resized in place. Everything else comes from ``torch.empty``.

    Args:
        x: the input the output is like.
        dtype: the output's dtype. Default: ``x.dtype``
    """
    dtype = dtype or x.dtype
    if _numpy_allocates(x, dtype):
        return torch.from_numpy(np.empty(tuple(x.shape), _NUMPY_DTYPES[dtype]))
    return torch.empty_like(x, dtype=dtype, memory_format=torch.contiguous_format)


def _numpy_allocates(x: Tensor, dtype: torch.dtype) -> bool:
    """Whether :func:`output_like` takes an output like ``x`` in ``dtype`` from NumPy."""
    return x.numel() * dtype.itemsize >= HUGE_PAGE_BYTES and x.device.type == "cpu" and dtype in _NUMPY_DTYPES


def out_for(x: Tensor) -> Tensor | None:
    """``out=`` for an operation whose result is a new tensor like ``x``, in ``x``'s dtype.

    :func:`output_like`'s memory where it differs from the operation's own; ``None`` (the
    operation allocates, one call fewer) where they are the same contiguous ``torch.empty``:
    for a contiguous ``x`` that NumPy would not allocate for.
    """
    return None if x.is_contiguous() and not _numpy_allocates(x, x.dtype) else output_like(x)


def update_running_stats(
    running_mean: Tensor, running_var: Tensor, mu: Tensor, var: Tensor, m: float, factor: float
) -> None:
    r"""Move the running statistics towards the batch's, in place: ``new = old + factor * (batch - old)``.

    The variance stored is the batch's unbiased one, :math:`\tfrac{m}{m-1}\sigma_B^2 = \sigma_B^2 +
    \sigma_B^2/(m-1)`, added without a temporary. ``mu`` and ``var`` (the biased variance, ``m > 1``
    values per feature) must not be differentiable: no graph is recorded for the buffers.
    """
    var = cast(var, running_var.dtype)
    running_mean.lerp_(cast(mu, running_mean.dtype), factor)
    running_var.lerp_(var, factor).add_(var, alpha=factor / (m - 1))


def _scale_shift(mu: Tensor, istd: Tensor, gamma: Tensor | None, beta: Tensor | None) -> tuple[Tensor, Tensor]:
    r"""Per-feature ``(s, t)`` with :math:`\gamma\hat{x} + \beta = x s + t`:
    :math:`s = \gamma/\sqrt{\sigma^2+\varepsilon}`, :math:`t = \beta - \mu s` (``gamma``, ``beta``
    may be ``None``; computed in ``mu``'s dtype)."""
    scale = istd if gamma is None else cast(gamma, mu.dtype) * istd
    shift = -mu * scale if beta is None else torch.addcmul(cast(beta, mu.dtype), mu, scale, value=-1)
    return scale, shift


def _register_affine(module: nn.Module, shape: Any, affine: bool, bias: bool, factory: dict) -> None:
    """Register ``weight`` and ``bias`` of ``shape`` on ``module``, as PyTorch's normalization layers do.

    Without ``affine`` both are registered as ``None``; with ``affine`` but not ``bias``, only
    ``bias`` is. :func:`_reset_affine` gives them their initial values.
    """
    weight = nn.Parameter(torch.empty(shape, **factory)) if affine else None
    module.register_parameter("weight", weight)
    module.register_parameter("bias", nn.Parameter(torch.empty(shape, **factory)) if affine and bias else None)


def _reset_affine(module: nn.Module) -> None:
    """``weight = 1``, ``bias = 0``, for those of the two that exist."""
    if module.weight is not None:
        nn.init.ones_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _input_grad(
    xc: Tensor, dyc: Tensor, x: Tensor, k: Tensor, mu: Tensor, istd: Tensor,
    dbeta: Tensor, dgamma: Tensor, m: float, out: Tensor,
) -> Tensor:
    r"""``dx`` by the compact formula, from the two batch sums and the number of values ``m``.

    :math:`dx = k\,(dy - \tfrac{1}{m}\sum dy) - k\,\hat{x}\,\tfrac{1}{m}\sum dy\,\hat{x}` with
    :math:`k = \gamma/\sqrt{\sigma^2+\varepsilon}` (the forward pass's scale), ``dbeta``
    :math:`= \sum dy` and ``dgamma`` :math:`= \sum dy\,\hat{x}`, rearranged as a multiply-add of
    ``dy`` and ``x`` written into ``out`` (scratch memory the size of ``x``). The sums may come
    from one process or from all of them (:class:`SyncBatchNormFunction`): the formula is the same.
    """
    # dx = k * (dy - dbeta/m) - k * dgamma/m * (x - mu) * istd = k * dy + a * x + b
    k_m = k * constant(-1.0 / m, k)  # -k / m
    a = (dgamma * istd).mul_(k_m)  # -k * dgamma * istd / m
    b = torch.addcmul(k_m * dbeta, a, mu, value=-1)  # -k * dbeta / m - a * mu
    torch.addcmul(per_feature(b, x), xc, per_feature(a, x), out=out)
    return cast(out.addcmul_(dyc, per_feature(k, x)), x.dtype)


class BatchNormFunction(torch.autograd.Function):
    r"""Training-mode batch norm, :math:`y = \gamma\,\hat{x} + \beta` with the batch's statistics.

    ``apply(x, gamma, beta, eps) -> (y, mu, var)``: ``mu`` and ``var`` (the biased variance,
    computed in float32 for half-precision input) are returned, not differentiable, so the
    module can update its running statistics without a second pass over ``x``. ``gamma``
    and ``beta`` may be ``None`` (``affine=False`` or ``bias=False``).

    The forward pass computes :math:`y = x \cdot s + t` with the per-feature scale
    :math:`s = \gamma/\sqrt{\sigma^2+\varepsilon}` and shift :math:`t = \beta - \mu s`. The backward
    pass is the compact formula (chapter "The backward pass"), rearranged so that ``dx`` is
    a multiply-add of ``dy`` and ``x``:

    .. math::

        dx = \frac{\gamma}{\sqrt{\sigma^2+\varepsilon}}\Big(dy - \frac{\sum dy}{m}\Big)
             - \frac{\gamma}{\sqrt{\sigma^2+\varepsilon}}\,\hat{x}\,\frac{\sum dy\,\hat{x}}{m}

    Each step is one PyTorch operation, which reads and writes whole tensors; new tensors the
    size of ``x`` are expensive (fresh memory), so the only ones made are ``y`` and ``dx``,
    which also serve as scratch space before their final values are written; both come from
    :func:`output_like`, in huge pages where the operating system offers them.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float):
        xc = cast(x, compute_dtype(x.dtype))
        dims = batch_dims(x)
        inv_m = constant(x.shape[1] / x.numel() if x.numel() else math.nan, xc)  # 1/m; an empty batch's mean is nan
        mu = xc.sum(dims).mul_(inv_m)  # the mean (Tensor.mean divides by a Python number)
        # The variance in two passes, the mean of squared deviations, built in y's memory.
        # (torch.var_mean does it in one, but over dimension 0 it is ~15x slower on CPU.)
        y = torch.sub(xc, per_feature(mu, x), out=out_for(xc))
        var = y.square_().sum(dims).mul_(inv_m)
        istd = torch.add(var, constant(eps, var)).rsqrt_()
        # y = gamma * (x - mu) * istd + beta = x * scale + shift: one pass over x
        scale, shift = _scale_shift(mu, istd, gamma, beta)
        torch.addcmul(per_feature(shift, x), xc, per_feature(scale, x), out=y)
        ctx.save_for_backward(x, gamma, mu, istd, scale)  # scale is dx's k: not computed again
        ctx.mark_non_differentiable(mu, var)
        ctx.set_materialize_grads(False)  # no zero tensors made for mu's and var's gradients
        return cast(y, x.dtype), mu, var

    @staticmethod
    def backward(ctx: Any, dy: Tensor | None, _dmu: Tensor | None, _dvar: Tensor | None):
        if dy is None:  # only mu or var was used: they are constants, so every gradient is zero
            return None, None, None, None
        x, gamma, mu, istd, k = ctx.saved_tensors
        dims = batch_dims(x)
        m = float(x.numel() // x.shape[1])  # a float: an int scalar would be cast at every use
        xc, dyc = cast(x, mu.dtype), cast(dy, mu.dtype)
        dbeta = dyc.sum(dims)  # sum_i dy_i
        # sum_i dy_i x_hat_i = istd * sum_i dy_i (x_i - mu), built in dx's memory
        dx = torch.sub(xc, per_feature(mu, x), out=out_for(xc))
        dgamma = dx.mul_(dyc).sum(dims).mul_(istd)
        if ctx.needs_input_grad[0]:
            dx = _input_grad(xc, dyc, x, k, mu, istd, dbeta, dgamma, m, out=dx)
        else:
            dx = None
        return (*needed_grads(ctx, x, gamma, dx, dgamma, dbeta), None)


def needed_grads(ctx: Any, x: Tensor, gamma: Tensor | None, dx: Tensor, dgamma: Tensor, dbeta: Tensor) -> tuple:
    """``(dx, dgamma, dbeta)`` as an ``autograd.Function``'s backward hands them back.

    ``None`` where autograd needs no gradient (``ctx.needs_input_grad`` of the inputs ``x``,
    ``gamma``, ``beta``, in that order); ``dgamma`` and ``dbeta``, computed in the statistics'
    dtype, cast to the parameters' (``x``'s when there is no ``gamma``). The backward passes of
    :mod:`bnlib.fused_torch` and :mod:`bnlib.triton` end with it.

    Args:
        ctx: the backward pass's context.
        x: the forward pass's input.
        gamma: ``(C,)`` or ``None``.
        dx: like ``x``.
        dgamma: ``(C,)``.
        dbeta: ``(C,)``.
    """
    param_dtype = gamma.dtype if gamma is not None else x.dtype
    return (
        dx if ctx.needs_input_grad[0] else None,
        cast(dgamma, param_dtype) if ctx.needs_input_grad[1] else None,
        cast(dbeta, param_dtype) if ctx.needs_input_grad[2] else None,
    )


class FrozenBatchNormFunction(torch.autograd.Function):
    r"""Evaluation-mode batch norm with fixed statistics ``mu`` and ``var`` (the running ones).

    ``apply(x, gamma, beta, mu, var, eps) -> y``. The statistics are constants here, so the
    gradient of ``x`` has no batch sums: :math:`dx = dy\,\gamma/\sqrt{\sigma^2+\varepsilon}`.
    """

    @staticmethod
    def forward(ctx: Any, x, gamma, beta, mu, var, eps: float):
        cdt = compute_dtype(x.dtype)
        xc = cast(x, cdt)
        mu = mu.to(cdt, copy=True)  # its own copy: the buffer changes at the next training step
        istd = torch.add(cast(var, cdt), constant(eps, mu)).rsqrt_()  # a new tensor: the buffer var is left as it is
        scale, shift = _scale_shift(mu, istd, gamma, beta)
        y = torch.addcmul(per_feature(shift, x), xc, per_feature(scale, x), out=output_like(xc))
        ctx.save_for_backward(x, gamma, mu, istd)
        return cast(y, x.dtype)

    @staticmethod
    def backward(ctx: Any, dy: Tensor):
        x, gamma, mu, istd = ctx.saved_tensors
        dims = batch_dims(x)
        dyc = cast(dy, mu.dtype)
        dx = dgamma = dbeta = None
        if ctx.needs_input_grad[0]:
            k = istd if gamma is None else cast(gamma, mu.dtype) * istd
            dx = cast(torch.mul(dyc, per_feature(k, x), out=output_like(dyc)), x.dtype)
        if ctx.needs_input_grad[1]:
            x_hat = (cast(x, mu.dtype) - per_feature(mu, x)) * per_feature(istd, x)
            dgamma = cast((dyc * x_hat).sum(dims), gamma.dtype)
        if ctx.needs_input_grad[2]:
            dbeta = cast(dyc.sum(dims), gamma.dtype if gamma is not None else x.dtype)
        return dx, dgamma, dbeta, None, None, None


class BatchNorm1d(nn.Module):
    r"""A drop-in for ``torch.nn.BatchNorm1d`` (torch 2.13), forward and backward written by hand.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \cdot \gamma + \beta

    Statistics are per feature, over ``N`` (or ``N`` and ``L``). Training normalizes with
    the biased variance and stores the *unbiased* one (factor ``m/(m-1)``, ``m = N·L``) in
    ``running_var``. The running averages follow
    ``new = (1 - momentum)·old + momentum·batch``; this ``momentum`` differs from an
    optimizer's and from Keras's (which weights the old value). ``momentum=None`` keeps the
    cumulative average over ``num_batches_tracked``. Evaluation uses the running statistics
    if they are tracked, else the batch's. Half-precision input (float16, bfloat16) is
    normalized with float32 statistics and returned in its own dtype.

    Unlike PyTorch, an input that raises leaves ``num_batches_tracked`` as it was.

    Args:
        num_features: ``C``.
        eps: added to the variance inside the square root. Default: 1e-5
        momentum: the new batch's weight, or ``None`` for a cumulative average. Default: 0.1
        affine: learnable ``weight`` (gamma) and ``bias`` (beta). Default: ``True``
        track_running_stats: keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked`` buffers. Default: ``True``
        device: where parameters and buffers live. Default: ``None`` (the default device)
        dtype: their dtype. Default: ``None`` (the default dtype)
        bias: keyword only; learn ``bias`` (with ``affine``). Default: ``True``

    Shape:
        - Input: ``(N, C)`` or ``(N, C, L)``
        - Output: same shape as the input
    """

    _version = 2
    __constants__ = ["track_running_stats", "momentum", "eps", "num_features", "affine"]

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _register_affine(self, num_features, affine, bias, factory)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, and ``weight = 1``, ``bias = 0``."""
        self.reset_running_stats()
        _reset_affine(self)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # As PyTorch: state dicts saved before version 2 have no num_batches_tracked.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _check_input(self, x: Tensor, batch_stats: bool) -> int:
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"expected input with {self.num_features} features in dimension 1, "
                f"got size {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"BatchNorm1d takes floating-point input, got {x.dtype}")
        params = [t for t in (self.weight, self.running_mean) if t is not None]
        if params and compute_dtype(x.dtype) != params[0].dtype and x.dtype != params[0].dtype:
            raise TypeError(
                f"input dtype {x.dtype} does not match the layer's {params[0].dtype}: cast the "
                f"input or the layer (.to(dtype)); half-precision input takes float32 layers"
            )
        m = x.numel() // x.shape[1] if x.shape[1] else 0
        if batch_stats and m == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.size()}"
            )
        if self.eps < 0 or (batch_stats and self.eps == 0):
            raise ValueError(f"batch_norm eps must be positive with batch statistics, got {self.eps}")
        return m

    def _normalize_with_batch_stats(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The training-mode kernel: ``(y, mu, var)``, ``mu`` and ``var`` not differentiable (the
        running statistics are updated from them outside ``torch.no_grad``). bnlib.fused_torch and
        bnlib.triton swap in others."""
        return BatchNormFunction.apply(x, self.weight, self.bias, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x``, ``(N, C)`` or ``(N, C, L)``, on ``x``'s device."""
        # Each buffer is looked up once: self.running_mean is a call of nn.Module.__getattr__.
        running_mean, running_var = self.running_mean, self.running_var
        batch_stats = self.training or running_mean is None
        m = self._check_input(x, batch_stats)
        # -- all checks passed: from here on, state may change --------------------------------
        update = self.training and self.track_running_stats
        factor = 0.0
        if update:
            count = self.num_batches_tracked.add_(1)
            factor = 1.0 / float(count) if self.momentum is None else self.momentum
        if m == 0:  # empty batch: empty output, statistics untouched (as PyTorch)
            return x.clone()
        if not batch_stats:
            return FrozenBatchNormFunction.apply(x, self.weight, self.bias, running_mean, running_var, self.eps)
        y, mu, var = self._normalize_with_batch_stats(x)
        if update:
            update_running_stats(running_mean, running_var, mu, var, m, factor)
        return y


# =============================================================================================
# Batch norm at scale and in deployment (chapter "Batch norm at scale and in deployment")
#
# SyncBatchNorm: one batch spread over several processes, normalized as one batch.
# Folding: evaluation-mode batch norm merged into the linear layer next to it.
# =============================================================================================

__all__ += [
    "Moments",
    "SyncBatchNormFunction",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "fold_into_linear",
    "fold_into_conv",
    "fold_into_next_linear",
    "fold_batch_norms",
]


class Moments(NamedTuple):
    r"""What one slice of a batch knows about each feature: count, mean and squared deviations.

    ``count`` is :math:`m_k`, the number of values per feature in the slice (a 0-dim tensor in
    the statistics' dtype), ``mean`` is :math:`\mu_k` and ``m2`` is
    :math:`M_k = \sum_i (x_i - \mu_k)^2`, both ``(C,)``. Two slices merge with the parallel
    formula of Chan, Golub and LeVeque (:meth:`merge`), never through :math:`\sum x^2`, whose
    difference :math:`\mathrm{E}[x^2] - \mathrm{E}[x]^2` loses every digit of a variance that is
    small next to the squared mean.
    """

    count: Tensor
    mean: Tensor
    m2: Tensor

    @classmethod
    def of(cls, xc: Tensor) -> Moments:
        """The moments of ``xc``, ``(N, C)`` or ``(N, C, L)``; an empty slice has count 0, mean 0, M 0."""
        m = xc.numel() // xc.shape[1]
        count = torch.tensor(float(m), dtype=xc.dtype, device=xc.device)
        if m == 0:
            zeros = xc.new_zeros(xc.shape[1])
            return cls(count, zeros, zeros.clone())
        dims = batch_dims(xc)
        mean = xc.mean(dims)
        m2 = (xc - per_feature(mean, xc)).square_().sum(dims)
        return cls(count, mean, m2)

    def merge(self, other: Moments) -> Moments:
        r"""Chan's pairwise merge: the moments of the two slices taken together.

        .. math::

            m = m_a + m_b, \quad \delta = \mu_b - \mu_a, \quad
            \mu = \mu_a + \delta\,\frac{m_b}{m}, \quad
            M = M_a + M_b + \delta^2\,\frac{m_a m_b}{m}

        Exact in exact arithmetic; in floating point every term is a sum of non-negative
        numbers of the size of the variance, so nothing cancels. An empty slice changes nothing.
        """
        count = self.count + other.count
        delta = other.mean - self.mean
        w = other.count / count.clamp(min=1)  # m_b / m, and 0 when both are empty
        return Moments(count, self.mean + delta * w, self.m2 + other.m2 + delta.square() * self.count * w)

    def pack(self) -> Tensor:
        """One message of ``2C + 1`` numbers: ``[count, mean..., m2...]``."""
        return torch.cat([self.count.reshape(1), self.mean, self.m2])

    @classmethod
    def unpack(cls, message: Tensor) -> Moments:
        """The inverse of :meth:`pack`."""
        c = (message.numel() - 1) // 2
        return cls(message[0], message[1 : 1 + c], message[1 + c :])


def _all_gather_moments(local: Moments, group: Any, world_size: int) -> list[Moments]:
    """Every process's :class:`Moments`, in rank order, on every process (one all-gather)."""
    message = local.pack()
    gathered = message.new_empty(world_size * message.numel())
    dist.all_gather_single(gathered, message, group=group)
    return [Moments.unpack(row) for row in gathered.view(world_size, -1)]


class SyncBatchNormFunction(torch.autograd.Function):
    r"""Training-mode batch norm over a batch split between the processes of ``group``.

    ``apply(x, gamma, beta, eps, group, world_size) -> (y, mu, var, m)``, ``x`` the slice of
    this process, ``(N_k, C)`` or ``(N_k, C, L)``; ``mu``, ``var`` (biased) and ``m`` (the number
    of values per feature over all processes, a 0-dim tensor) are those of the whole batch and
    not differentiable. Slices may differ in size, and may be empty.

    Forward: each process computes the :class:`Moments` of its slice and sends them, ``2C + 1``
    numbers, to all the others in one all-gather; every process merges the same list in rank
    order with Chan's formula, so all of them hold the same ``mu`` and ``var`` to the last bit,
    and normalizes its own slice with them. (The all-gather stands in for an all-reduce:
    ``torch.distributed`` reduces only with element-wise sums, products, minima and maxima,
    and the merge is none of them.)

    Backward: ``dx`` needs two sums over the *whole* batch, :math:`\sum dy` and
    :math:`\sum dy\,\hat{x}`; each process computes them over its slice and one all-reduce of
    ``2C`` numbers adds them up, then the compact formula of a single process applies
    unchanged with the global ``m`` (:func:`_input_grad`). ``dgamma`` and ``dbeta`` are the
    slice's own sums, as in PyTorch: data-parallel training adds the processes' parameter
    gradients up anyway (``DistributedDataParallel`` all-reduces them). Every process of the
    group must run the backward pass if one does.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float,
                group: Any, world_size: int):
        xc = cast(x, compute_dtype(x.dtype))
        whole = functools.reduce(Moments.merge, _all_gather_moments(Moments.of(xc), group, world_size))
        m = float(whole.count)
        if m == 1:  # every process sees the same count, so all of them raise here together
            raise ValueError(
                f"Expected more than 1 value per channel when training, got {m:.0f} over all "
                f"{world_size} processes (input size {tuple(x.shape)} on this one)"
            )
        mu, var = whole.mean, whole.m2 / m
        istd = torch.add(var, constant(eps, var)).rsqrt_()
        scale, shift = _scale_shift(mu, istd, gamma, beta)
        y = torch.addcmul(per_feature(shift, x), xc, per_feature(scale, x))
        ctx.save_for_backward(x, gamma, mu, istd, scale)
        ctx.m, ctx.group = m, group
        ctx.mark_non_differentiable(mu, var, whole.count)
        return cast(y, x.dtype), mu, var, whole.count

    @staticmethod
    def backward(ctx: Any, dy: Tensor, _dmu: Tensor | None, _dvar: Tensor | None, _dm: Tensor | None):
        x, gamma, mu, istd, k = ctx.saved_tensors
        dims = batch_dims(x)
        xc, dyc = cast(x, mu.dtype), cast(dy, mu.dtype)
        dbeta = dyc.sum(dims)  # this slice's sum dy
        dx = xc - per_feature(mu, x)
        dgamma = dx.mul_(dyc).sum(dims) * istd  # this slice's sum dy x_hat
        if ctx.needs_input_grad[0]:
            sums = torch.cat([dbeta, dgamma])
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=ctx.group)
            dbeta_all, dgamma_all = sums.chunk(2)
            dx = _input_grad(xc, dyc, x, k, mu, istd, dbeta_all, dgamma_all, ctx.m, out=dx)
        return (*needed_grads(ctx, x, gamma, dx, dgamma, dbeta), None, None, None)


class SyncBatchNorm(BatchNorm1d):
    r"""A drop-in for ``torch.nn.SyncBatchNorm`` (torch 2.13) that also runs on CPU, over gloo.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \cdot \gamma + \beta

    where the statistics are per feature over the batch *of all processes* of
    ``process_group`` together, each holding a slice of it (``N`` may differ from one process
    to the next, even be 0). Outputs, input gradients and running statistics are those of one
    batch-norm layer on the concatenated batch; ``weight.grad`` and ``bias.grad`` are this
    slice's share, to be summed across processes as data-parallel training does. How:
    :class:`SyncBatchNormFunction`; the derivation and the bytes sent are in the chapter
    "Batch norm at scale and in deployment".

    PyTorch's semantics, including when nothing is synchronized: in evaluation mode (even with
    ``track_running_stats=False``, where each process then normalizes its own slice), when
    ``torch.distributed`` is not initialized, or when the group has a single process, the
    layer is :class:`BatchNorm1d` (on any ``(N, C, *)`` input). Unlike PyTorch's, it
    synchronizes tensors on any device its backend handles: gloo on CPU, nccl on CUDA GPUs.
    Running statistics follow ``BatchNorm1d`` with the whole batch's mean and the unbiased
    variance of all ``m`` values; ``num_batches_tracked`` counts steps, not processes.
    Parameters, buffers, ``repr`` and ``state_dict`` are those of ``nn.SyncBatchNorm``, so
    state dicts move freely between it, ``nn.BatchNorm1d/2d/3d`` and this layer.

    Args:
        num_features: ``C``.
        eps: added to the variance inside the square root. Default: 1e-5
        momentum: the new batch's weight, or ``None`` for a cumulative average. Default: 0.1
        affine: learnable ``weight`` (gamma) and ``bias`` (beta). Default: ``True``
        track_running_stats: keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked``. Default: ``True``
        process_group: the processes whose slices form one batch. Default: ``None`` (the
            whole world)
        device: where parameters and buffers live. Default: ``None`` (the default device)
        dtype: their dtype. Default: ``None`` (the default dtype)
        bias: keyword only; learn ``bias`` (with ``affine``). Default: ``True``

    Shape:
        - Input: ``(N, C, *)``: ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, ...
        - Output: same shape as the input
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any | None = None,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group: Any | None = None) -> nn.Module:
        """:func:`convert_sync_batchnorm`, where PyTorch has it."""
        return convert_sync_batchnorm(module, process_group)

    def _sync_group(self) -> tuple[Any, int] | None:
        """``(group, world_size)`` when this step must synchronize, else ``None`` (as PyTorch decides)."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        world_size = dist.get_world_size(group)
        return (group, world_size) if world_size > 1 else None

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x``, this process's slice ``(N, C, *)``, with the statistics of all slices."""
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")
        if x.shape[1] == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")
        # (N, C, H, W, ...) is (N, C, L) with L = H·W·...: the statistics do not see the layout
        x3 = x if x.dim() <= 3 else x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
        sync = self._sync_group()
        if sync is None:
            return super().forward(x3).reshape(x.shape)
        self._check_input(x3, batch_stats=False)  # shape, dtype; one value per process is allowed
        if self.eps <= 0:
            raise ValueError(f"batch_norm eps must be positive with batch statistics, got {self.eps}")
        tracking = self.track_running_stats
        if tracking:  # counted once the step has passed every check, as BatchNorm1d does
            steps = int(self.num_batches_tracked) + 1
            factor = 1.0 / steps if self.momentum is None else self.momentum
        y, mu, var, m = SyncBatchNormFunction.apply(x3, self.weight, self.bias, self.eps, *sync)
        if tracking:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = float(m)
            if m > 0:  # an empty batch (on every process) leaves the statistics as they were
                update_running_stats(self.running_mean, self.running_var, mu, var, m, factor)
        return y.reshape(x.shape)


#: The layers :func:`convert_sync_batchnorm` replaces: PyTorch's batch norms (BatchNorm1d/2d/3d,
#: SyncBatchNorm and their subclasses) and this module's.
_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, BatchNorm1d)


def convert_sync_batchnorm(module: nn.Module, process_group: Any | None = None) -> nn.Module:
    r"""Every batch-norm layer of ``module`` replaced by a :class:`SyncBatchNorm`, as PyTorch's does.

    What ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does, with this module's layer: each
    ``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm`` or :class:`BatchNorm1d` (subclasses
    included) becomes a :class:`SyncBatchNorm` with the same ``num_features``, ``eps``,
    ``momentum``, ``affine``, ``track_running_stats`` and ``bias``, that *shares* the old
    layer's ``weight`` and ``bias`` parameters and its ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` tensors (no copies: device and dtype stay), its ``training`` flag
    and its ``qconfig`` if it has one. Other modules are kept, their children converted in place.

    Args:
        module: a model, or one batch-norm layer.
        process_group: the group every new layer synchronizes over. Default: ``None`` (the world)

    Returns:
        ``module`` itself with its batch norms replaced, or a new :class:`SyncBatchNorm` if
        ``module`` is a batch-norm layer.
    """
    converted = module
    if isinstance(module, _BATCH_NORMS):
        converted = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats, process_group, bias=module.bias is not None,
        )
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
        if hasattr(module, "qconfig"):
            converted.qconfig = module.qconfig
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, process_group))
    return converted


# -- folding ----------------------------------------------------------------------------------


def _frozen_affine(bn: nn.Module, weight: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(a, b)`` with ``bn(h) = a·h + b`` per feature in evaluation mode.

    Computed in the wider of ``bn``'s and the neighbour's ``weight``'s dtypes, on their device.
    :math:`a = \gamma/\sqrt{\sigma^2_{\text{running}} + \varepsilon}`,
    :math:`b = \beta - a\,\mu_{\text{running}}`. Raises for a layer that is not such a map.
    """
    if not isinstance(bn, _BATCH_NORMS):
        raise TypeError(f"expected a batch-norm layer, got {type(bn).__name__}")
    if bn.training:
        raise ValueError(
            f"{type(bn).__name__} is in training mode: it normalizes with each batch's own statistics, "
            f"which no fixed weights reproduce; fold for inference, after model.eval()"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"{type(bn).__name__} has track_running_stats=False: it normalizes with the batch's own "
            f"statistics even in evaluation mode, so it is not a fixed map and cannot be folded"
        )
    dtype = torch.promote_types(weight.dtype, bn.running_var.dtype)
    a = torch.rsqrt(bn.running_var.to(dtype) + bn.eps)
    if bn.weight is not None:
        a = a * bn.weight.detach().to(dtype)
    b = -a * bn.running_mean.to(dtype)
    if bn.bias is not None:
        b = b + bn.bias.detach().to(dtype)
    return a, b


def _check_eval(layer: nn.Module, role: str) -> None:
    if layer.training:
        raise ValueError(f"the {role} {type(layer).__name__} is in training mode: call model.eval() before folding")


def _with_weights(layer: nn.Module, weight: Tensor, bias: Tensor) -> nn.Module:
    """A copy of ``layer`` with new ``weight`` and ``bias`` in its own dtypes (a bias is added if it had none)."""
    folded = copy.deepcopy(layer)
    requires_grad = layer.weight.requires_grad
    folded.weight = nn.Parameter(weight.to(layer.weight.dtype), requires_grad)
    bias_dtype = layer.bias.dtype if layer.bias is not None else layer.weight.dtype
    folded.bias = nn.Parameter(bias.to(bias_dtype), requires_grad)
    return folded


def _fold_after(layer: nn.Module, bn: nn.Module, out_features: int, what: str) -> nn.Module:
    """``bn ∘ layer`` as one layer: row ``j`` of the weight times ``a_j``, bias ``a·c + b``."""
    _check_eval(layer, what)
    a, b = _frozen_affine(bn, layer.weight)
    if bn.num_features != out_features:
        raise ValueError(
            f"the batch norm normalizes {bn.num_features} features but the {what} before it has "
            f"{out_features} outputs: it does not come right after this layer"
        )
    w = layer.weight.detach().to(a.dtype)
    c = layer.bias.detach().to(a.dtype) if layer.bias is not None else torch.zeros_like(a)
    return _with_weights(layer, w * a.view(-1, *[1] * (w.dim() - 1)), a * c + b)


def fold_into_linear(linear: nn.Linear, bn: nn.Module) -> nn.Linear:
    r"""The linear layer that computes ``bn(linear(x))`` for evaluation-mode ``bn``.

    With :math:`h = W x + c` and ``bn`` the fixed map :math:`a \otimes h + b`
    (:math:`a = \gamma/\sqrt{\sigma^2_{\text{running}}+\varepsilon}`,
    :math:`b = \beta - a \otimes \mu_{\text{running}}`), the composition is
    :math:`W' x + c'` with :math:`W' = \mathrm{diag}(a)\,W` (row :math:`j` scaled by :math:`a_j`)
    and :math:`c' = a \otimes c + b`. What ``torch.nn.utils.fusion.fuse_linear_bn_eval`` computes;
    the proof is in the chapter "Batch norm at scale and in deployment".

    Args:
        linear: an ``nn.Linear`` (with or without bias), in evaluation mode.
        bn: the batch norm right after it, in evaluation mode with running statistics
            (``nn.BatchNorm1d``, :class:`BatchNorm1d`, :class:`SyncBatchNorm`, ...).

    Returns:
        A new ``nn.Linear`` (a copy of ``linear``, always with a bias); the inputs are untouched.

    Raises:
        ValueError: a layer in training mode, a batch norm without running statistics, or
            ``bn.num_features != linear.out_features``.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fold_into_linear expects an nn.Linear, got {type(linear).__name__}")
    return _fold_after(linear, bn, linear.out_features, "linear layer")


def fold_into_conv(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    r"""The convolution that computes ``bn(conv(x))`` for evaluation-mode ``bn``.

    As :func:`fold_into_linear`, channel by channel: the filters of output channel :math:`j`
    are scaled by :math:`a_j` and the bias becomes :math:`a \otimes c + b`. Padding changes
    nothing: batch norm comes after the convolution, so it sees the padded output like any
    other. What ``torch.nn.utils.fusion.fuse_conv_bn_eval`` computes.

    Args:
        conv: an ``nn.Conv2d`` (or ``Conv1d``/``Conv3d``; not transposed), in evaluation mode.
        bn: the batch norm right after it (``nn.BatchNorm2d`` for a ``Conv2d``), in
            evaluation mode with running statistics.

    Returns:
        A new convolution of the same type (a copy of ``conv``, always with a bias).

    Raises:
        ValueError: a layer in training mode, a batch norm without running statistics, a
            transposed convolution, or ``bn.num_features != conv.out_channels``.
    """
    if not isinstance(conv, nn.modules.conv._ConvNd):
        raise TypeError(f"fold_into_conv expects a convolution, got {type(conv).__name__}")
    if conv.transposed:
        raise ValueError(f"{type(conv).__name__} is transposed: its weight is laid out (in, out, ...); not supported")
    return _fold_after(conv, bn, conv.out_channels, "convolution")


def fold_into_next_linear(bn: nn.Module, linear: nn.Linear) -> nn.Linear:
    r"""The linear layer that computes ``linear(bn(x))`` for evaluation-mode ``bn`` on ``(N, C)`` input.

    Batch norm *before* a linear layer, as after a ReLU: with ``bn`` the fixed map
    :math:`a \otimes x + b` and the layer :math:`W h + c`,
    :math:`W (a \otimes x + b) + c = W' x + c'` with :math:`W' = W\,\mathrm{diag}(a)` (column
    :math:`k` scaled by :math:`a_k`) and :math:`c' = W b + c`. PyTorch's ``fusion`` has no
    counterpart. Only for ``(N, C)`` input, where batch norm's features are the linear layer's
    inputs. (Before a *convolution* with zero padding the same trick is wrong at the borders:
    the padded zeros would have to become :math:`-b/a`.)

    Args:
        bn: a batch norm in evaluation mode with running statistics.
        linear: the ``nn.Linear`` right after it, in evaluation mode.

    Returns:
        A new ``nn.Linear`` (a copy of ``linear``, always with a bias).

    Raises:
        ValueError: a layer in training mode, a batch norm without running statistics, or
            ``bn.num_features != linear.in_features``.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fold_into_next_linear expects an nn.Linear, got {type(linear).__name__}")
    _check_eval(linear, "linear layer")
    a, b = _frozen_affine(bn, linear.weight)
    if bn.num_features != linear.in_features:
        raise ValueError(
            f"the batch norm normalizes {bn.num_features} features but the linear layer after it "
            f"takes {linear.in_features} inputs: it does not feed this layer"
        )
    w = linear.weight.detach().to(a.dtype)
    c = linear.bias.detach().to(a.dtype) if linear.bias is not None else w.new_zeros(w.shape[0])
    return _with_weights(linear, w * a, w @ b + c)


def fold_batch_norms(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` (evaluation mode) with every batch norm folded into a linear neighbour.

    A batch norm right after an ``nn.Linear`` or a convolution is folded into it
    (:func:`fold_into_linear`, :func:`fold_into_conv`); otherwise, one right before an
    ``nn.Linear`` is folded into that (:func:`fold_into_next_linear`), as in
    ``Linear → ReLU → BatchNorm1d → Linear``. Every other layer is copied as it is.

    Raises:
        ValueError: a batch norm with neither neighbour (for example between a ReLU and a
            convolution), or any reason the fold functions give.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"fold_batch_norms takes an nn.Sequential, got {type(model).__name__}")
    layers = [copy.deepcopy(layer) for layer in model]
    folded: list[nn.Module] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        after = layers[i + 1] if i + 1 < len(layers) else None
        if not isinstance(layer, _BATCH_NORMS):
            folded.append(layer)
        elif folded and isinstance(folded[-1], nn.Linear):
            folded[-1] = fold_into_linear(folded[-1], layer)
        elif folded and isinstance(folded[-1], nn.modules.conv._ConvNd) and not folded[-1].transposed:
            folded[-1] = fold_into_conv(folded[-1], layer)
        elif isinstance(after, nn.Linear):
            folded.append(fold_into_next_linear(layer, after))
            i += 1
        else:
            before = type(folded[-1]).__name__ if folded else "the input"
            raise ValueError(
                f"layer {i} ({type(layer).__name__}) comes after {before} and before "
                f"{type(after).__name__ if after is not None else 'the output'}: no linear layer or "
                f"convolution to fold it into"
            )
        i += 1
    return nn.Sequential(*folded).train(model.training)


# =============================================================================================
# Batch norm for convolutions, and the normalization family (chapters "Batch norm for
# convolutions" and "The normalization family").
#
# BatchNorm2d: BatchNorm1d's functions over the m = N·H·W values of each channel.
# LayerNorm and GroupNorm: each example normalized over its own values, by rows.
# =============================================================================================

__all__ += [
    "BatchNorm2d",
    "normalize_rows",
    "normalize_rows_backward",
    "LayerNormFunction",
    "LayerNorm",
    "GroupNormFunction",
    "GroupNorm",
]


class BatchNorm2d(BatchNorm1d):
    r"""A drop-in for ``torch.nn.BatchNorm2d`` (torch 2.13), forward and backward written by hand.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \cdot \gamma + \beta

    The statistics of a channel are taken over every position of every example, ``m = N·H·W``
    values: a convolution shares its filter across positions, so batch norm shares its
    ``gamma`` and ``beta`` across them too. Everything else is :class:`BatchNorm1d`'s: the
    same :class:`BatchNormFunction` and :class:`FrozenBatchNormFunction` (their
    :func:`batch_dims` are ``[0, 2, 3]`` here), the unbiased running variance with
    :math:`m/(m-1)` for that ``m``, momentum, parameters, buffers, ``state_dict`` (old
    checkpoints without ``num_batches_tracked`` load), dtype and device rules. Derivation:
    the chapter "Batch norm for convolutions".

    Args:
        num_features: ``C``, the number of channels.
        eps: Default: 1e-5
        momentum: Default: 0.1
        affine: Default: ``True``
        track_running_stats: Default: ``True``
        device: Default: ``None``
        dtype: Default: ``None``
        bias: Default: ``True``

        (as :class:`BatchNorm1d`)

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)``
    """

    def _check_input(self, x: Tensor, batch_stats: bool) -> int:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"expected input with {self.num_features} channels in dimension 1, got size {tuple(x.shape)}"
            )
        if batch_stats and x.numel() == x.shape[1]:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.size()}"
            )
        # The remaining checks (dtype, eps) are BatchNorm1d's, on the (N, C, H·W) view.
        return super()._check_input(x.flatten(2), batch_stats)


def normalize_rows(xr: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    r"""Normalize each row of ``xr``, ``(R, K)``, over its ``K`` values: ``(x_hat, istd)``.

    :math:`\hat{x}_{rk} = (x_{rk} - \mu_r)/\sqrt{\sigma_r^2 + \varepsilon}` with the row's mean
    and biased variance: batch norm's normalization with the axes swapped (the row's values
    play the examples). ``istd`` is :math:`1/\sqrt{\sigma_r^2+\varepsilon}`, ``(R, 1)``.
    """
    mu = xr.mean(1, keepdim=True)
    x_hat = xr - mu
    var = x_hat.square().mean(1, keepdim=True)
    istd = torch.rsqrt(var + eps)
    return x_hat.mul_(istd), istd


def normalize_rows_backward(dx_hat: Tensor, x_hat: Tensor, istd: Tensor) -> Tensor:
    r"""The backward pass of :func:`normalize_rows`: the compact formula over each row, :math:`\gamma = 1`.

    .. math::

        \frac{\partial \ell}{\partial x_{rk}} = \frac{1}{\sqrt{\sigma_r^2+\varepsilon}}
        \Big(\frac{\partial \ell}{\partial \hat{x}_{rk}}
        - \frac1K \sum_{k'} \frac{\partial \ell}{\partial \hat{x}_{rk'}}
        - \hat{x}_{rk}\,\frac1K \sum_{k'} \frac{\partial \ell}{\partial \hat{x}_{rk'}}\hat{x}_{rk'}\Big)

    The sums run over a row (one example's values), never across the batch.
    """
    mean_dx_hat = dx_hat.mean(1, keepdim=True)
    mean_dx_hat_x_hat = (dx_hat * x_hat).mean(1, keepdim=True)
    return (dx_hat - mean_dx_hat - x_hat * mean_dx_hat_x_hat) * istd


def _check_dtype(layer: nn.Module, x: Tensor) -> None:
    """Floating-point input of the parameters' dtype (or half precision for float32 parameters)."""
    if not x.is_floating_point():
        raise TypeError(f"{type(layer).__name__} takes floating-point input, got {x.dtype}")
    w = layer.weight
    if w is not None and compute_dtype(x.dtype) != w.dtype and x.dtype != w.dtype:
        raise TypeError(
            f"input dtype {x.dtype} does not match the layer's {w.dtype}: cast the input or the "
            f"layer (.to(dtype)); half-precision input takes float32 layers"
        )


class LayerNormFunction(torch.autograd.Function):
    r"""Layer norm over the last ``d`` dimensions, :math:`y = \gamma \otimes \hat{x} + \beta`, per element.

    ``apply(x, gamma, beta, d, eps) -> y``; ``gamma`` and ``beta`` have the shape of the last
    ``d`` dimensions of ``x``, or are ``None``. ``x`` is viewed as rows of ``K`` values (the
    product of those dimensions), each normalized by :func:`normalize_rows` (in float32 for
    half-precision input). Backward, by the chain rule through the elementwise affine:
    ``dbeta`` :math:`= \sum_r dy_r`, ``dgamma`` :math:`= \sum_r dy_r \otimes \hat{x}_r`, and
    :func:`normalize_rows_backward` of :math:`\gamma \otimes dy`.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, gamma: Tensor | None, beta: Tensor | None, d: int, eps: float):
        rows, k = math.prod(x.shape[: x.dim() - d]), math.prod(x.shape[x.dim() - d:])
        cdt = compute_dtype(x.dtype)
        x_hat, istd = normalize_rows(x.to(cdt).reshape(rows, k), eps)
        y = x_hat.clone()
        if gamma is not None:
            y.mul_(gamma.to(cdt).reshape(-1))
        if beta is not None:
            y.add_(beta.to(cdt).reshape(-1))
        ctx.save_for_backward(x_hat, istd, gamma)
        ctx.x_dtype, ctx.shape, ctx.param_shape = x.dtype, x.shape, x.shape[x.dim() - d:]
        return y.reshape(x.shape).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, dy: Tensor):
        x_hat, istd, gamma = ctx.saved_tensors
        dyr = dy.to(x_hat.dtype).reshape(x_hat.shape)
        dbeta = dyr.sum(0)
        dgamma = (dyr * x_hat).sum(0)
        dx_hat = dyr if gamma is None else dyr * gamma.to(x_hat.dtype).reshape(-1)
        dx = normalize_rows_backward(dx_hat, x_hat, istd).reshape(ctx.shape).to(ctx.x_dtype)
        shape = ctx.param_shape
        return (*needed_grads(ctx, dx, gamma, dx, dgamma.reshape(shape), dbeta.reshape(shape)), None, None)


class LayerNorm(nn.Module):
    r"""A drop-in for ``torch.nn.LayerNorm`` (torch 2.13), forward and backward written by hand.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \cdot \gamma + \beta

    The mean and the biased variance are taken over the last ``len(normalized_shape)``
    dimensions, for each example (and each leading position) alone: no running statistics,
    the same computation in training and evaluation, no dependence on the batch. ``weight``
    and ``bias`` have the shape ``normalized_shape``, one per element (batch norm has one per
    channel). Computed by :class:`LayerNormFunction`; derivation: the chapter "The
    normalization family".

    Args:
        normalized_shape: the trailing shape to normalize over, an ``int`` or a sequence.
        eps: added to the variance inside the square root. Default: 1e-5
        elementwise_affine: learnable ``weight`` and ``bias``. Default: ``True``
        bias: learn ``bias`` (with ``elementwise_affine``). Default: ``True``
        device: Default: ``None``
        dtype: Default: ``None``

    Shape:
        - Input: ``(N, *)``, ending in ``normalized_shape``
        - Output: the same shape as the input

    Raises:
        RuntimeError: input that does not end in ``normalized_shape`` (PyTorch's message).
        TypeError: input that is not floating point, or of another precision than the layer.
    """

    __constants__ = ["normalized_shape", "eps", "elementwise_affine"]

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | torch.Size,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _register_affine(self, self.normalized_shape, elementwise_affine, bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``weight = 1``, ``bias = 0``."""
        _reset_affine(self)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Normalize each example of ``x`` over its last dimensions, on ``x``'s device."""
        d = len(self.normalized_shape)
        if x.dim() < d or tuple(x.shape[x.dim() - d:]) != self.normalized_shape:
            shape = list(self.normalized_shape)
            raise RuntimeError(
                f"Given normalized_shape={shape}, expected input with shape [*, "
                f"{', '.join(map(str, shape))}], but got input of size{list(x.shape)}"
            )
        _check_dtype(self, x)
        return LayerNormFunction.apply(x, self.weight, self.bias, d, self.eps)


class GroupNormFunction(torch.autograd.Function):
    r"""Group norm: each example's groups of channels normalized, then a per-channel affine.

    ``apply(x, gamma, beta, G, eps) -> y`` for ``x`` of shape ``(N, C, *)``; ``gamma`` and
    ``beta`` are ``(C,)`` or ``None``. ``x`` is viewed as ``N·G`` rows of ``(C/G)·H·W`` values,
    each normalized by :func:`normalize_rows`; then :math:`y = \gamma_c \hat{x} + \beta_c`.
    Backward: ``dbeta`` and ``dgamma`` are per-channel sums over :func:`batch_dims`, and
    :func:`normalize_rows_backward` of :math:`\gamma_c\,dy` per group.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, gamma: Tensor | None, beta: Tensor | None, groups: int, eps: float):
        cdt = compute_dtype(x.dtype)
        rows = (x.shape[0] * groups, x.numel() // max(x.shape[0] * groups, 1))
        x_hat, istd = normalize_rows(x.to(cdt).reshape(rows), eps)
        x_hat = x_hat.view(x.shape)
        y = x_hat.clone()
        if gamma is not None:
            y.mul_(per_feature(gamma.to(cdt), x))
        if beta is not None:
            y.add_(per_feature(beta.to(cdt), x))
        ctx.save_for_backward(x_hat, istd, gamma)
        ctx.x_dtype = x.dtype
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, dy: Tensor):
        x_hat, istd, gamma = ctx.saved_tensors
        dims = batch_dims(x_hat)
        dyc = dy.to(x_hat.dtype)
        dbeta = dyc.sum(dims)
        dgamma = (dyc * x_hat).sum(dims)
        dx_hat = dyc if gamma is None else dyc * per_feature(gamma.to(x_hat.dtype), x_hat)
        rows = istd.shape[0], x_hat.numel() // max(istd.shape[0], 1)
        dx = normalize_rows_backward(dx_hat.reshape(rows), x_hat.reshape(rows), istd)
        dx = dx.view(x_hat.shape).to(ctx.x_dtype)
        return (*needed_grads(ctx, dx, gamma, dx, dgamma, dbeta), None, None)


class GroupNorm(nn.Module):
    r"""A drop-in for ``torch.nn.GroupNorm`` (torch 2.13), forward and backward written by hand.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \cdot \gamma + \beta

    The ``C`` channels are split into ``num_groups`` groups of consecutive channels; the
    mean and the biased variance are taken over each group of each example, ``(C/G)·H·W``
    values, in training and evaluation alike (no running statistics). ``weight`` and
    ``bias`` are per channel. ``num_groups = 1`` normalizes each example as a whole,
    ``num_groups = C`` each channel of each example (instance norm). Computed by
    :class:`GroupNormFunction`; derivation: the chapter "The normalization family".

    Args:
        num_groups: ``G``; it must divide ``num_channels``.
        num_channels: ``C``.
        eps: added to the variance inside the square root. Default: 1e-5
        affine: learnable per-channel ``weight`` and ``bias``. Default: ``True``
        device: Default: ``None``
        dtype: Default: ``None``
        bias: keyword only; learn ``bias`` (with ``affine``). Default: ``True``

    Shape:
        - Input: ``(N, C, *)``
        - Output: the same shape as the input

    Raises:
        ValueError: ``num_groups`` does not divide ``num_channels`` (at construction, PyTorch's
            message); one value per group in the whole batch (PyTorch's "Expected more than 1
            value per channel when training", in both modes, as PyTorch).
        RuntimeError: input with fewer than 2 dimensions, or whose dimension 1 is not
            ``num_channels`` (PyTorch's messages).
        TypeError: input that is not floating point, or of another precision than the layer.
    """

    __constants__ = ["num_groups", "num_channels", "eps", "affine"]

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _register_affine(self, num_channels, affine, bias, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``weight = 1``, ``bias = 0``."""
        _reset_affine(self)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Normalize each group of channels of each example, on ``x``'s device."""
        if x.dim() < 2:
            raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {x.dim()}")
        n, c, *spatial = x.shape
        sizes = [n * c // self.num_groups, self.num_groups, *spatial]
        if sizes[0] * math.prod(spatial) == 1:  # PyTorch's _verify_batch_size, in both modes
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {sizes}")
        if c != self.num_channels:
            raise RuntimeError(
                "Expected weight to be a vector of size equal to the number of channels in input, "
                f"but got weight of shape [{self.num_channels}] and input of shape {list(x.shape)}"
            )
        _check_dtype(self, x)
        return GroupNormFunction.apply(x, self.weight, self.bias, self.num_groups, self.eps)
