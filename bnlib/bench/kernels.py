"""The kernels the harness races: the course's implementations, each as a :class:`bnlib.bench.core.Kernel`.

A kernel prepares two calls on given float32 inputs, a training-mode forward pass and a
forward and backward pass. :func:`module_kernel` makes one from any ``nn.BatchNorm1d``-like
module (PyTorch's own, :mod:`bnlib.torch`, :mod:`bnlib.fused_torch`, :mod:`bnlib.triton`, a
student's); the NumPy layers and the fused NumPy kernels get adapters of their own, which
hand them the tensors' memory as arrays. :func:`builtin_kernels` lists them all in the order
the chapter "Benchmarks" discusses them. The kernels know nothing of the harness: it imports
them, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from bnlib import fused_numpy, fused_torch
from bnlib import numpy as bnp
from bnlib import torch as bnt
from bnlib.bench.core import REFERENCE, Kernel

__all__ = ["module_kernel", "builtin_kernels"]


def module_kernel(name: str, description: str, make: Callable[[int], nn.Module]) -> Kernel:
    """A kernel from an ``nn.BatchNorm1d``-like module class: ``make(C)`` builds one, in training mode.

    The forward call is ``module(x)`` with autograd recording, as in training; the
    forward+backward call adds ``torch.autograd.grad`` of ``x``, ``weight`` and ``bias``
    (which, unlike ``.backward()``, does not also add into ``.grad`` buffers).
    """

    def prepare(x: torch.Tensor, dy: torch.Tensor, threads: int):  # torch's threads are set by run()
        module = make(x.shape[1]).to(x.device).train()
        x = x.detach().requires_grad_(True)
        inputs = [x] + [p for p in (getattr(module, "weight", None), getattr(module, "bias", None)) if p is not None]

        def forward():
            return module(x)

        def forward_backward():
            return torch.autograd.grad(module(x), inputs, dy)

        return forward, forward_backward

    return Kernel(name, description, prepare)


def _numpy_layer_kernel(name: str, description: str, make: Callable[[int, int], Any]) -> Kernel:
    def prepare(x: torch.Tensor, dy: torch.Tensor, threads: int):
        xn, dyn = x.detach().numpy(), dy.numpy()
        layer = make(x.shape[1], threads)

        def forward_backward():
            layer.forward(xn)
            return layer.backward(dyn)

        return (lambda: layer.forward(xn)), forward_backward

    return Kernel(name, description, prepare)


def _numpy_out_kernel() -> Kernel:
    def prepare(x: torch.Tensor, dy: torch.Tensor, threads: int):
        xn, dyn = x.detach().numpy(), dy.numpy()
        if xn.ndim == 3:  # the kernels take (m, C): the layout change is outside the timing
            xn, dyn = np.ascontiguousarray(bnp.to_2d(xn)), np.ascontiguousarray(bnp.to_2d(dyn))
        gamma, beta = np.ones(xn.shape[1], np.float32), np.zeros(xn.shape[1], np.float32)
        y, dx = np.empty_like(xn), np.empty_like(xn)

        def forward():
            return fused_numpy.forward_train(xn, gamma, beta, 1e-5, out=y, threads=threads)

        def forward_backward():
            _, cache = fused_numpy.forward_train(xn, gamma, beta, 1e-5, out=y, threads=threads)
            return fused_numpy.backward_train(dyn, cache, out=dx, threads=threads)

        return forward, forward_backward

    return Kernel(
        "fused_numpy, out=",
        "the fused NumPy kernels writing into arrays allocated once: no fresh memory",
        prepare,
    )


def builtin_kernels(device: str = "cpu") -> list[Kernel]:
    """The kernels of the course, in the order the chapter "Benchmarks" discusses them.

    NumPy kernels run on the CPU only; the Triton kernel on CUDA only (it needs ``triton``).
    """
    kernels = [
        module_kernel(REFERENCE, "PyTorch's own (ATen on a CPU, cuDNN on a GPU)", nn.BatchNorm1d),
        module_kernel("bnlib.torch", "hand-written autograd.Function, eager", bnt.BatchNorm1d),
        module_kernel(
            "fused_torch, eager", "plain forward and backward, one kernel per operation",
            lambda c: fused_torch.BatchNorm1d(c, compiled=False),
        ),
        module_kernel(
            "fused_torch, compiled", "the same functions through torch.compile: four fused loops",
            fused_torch.BatchNorm1d,
        ),
        _numpy_layer_kernel(
            "bnlib.numpy", "the staged NumPy layer (float64 arithmetic, one thread)",
            lambda c, threads: bnp.BatchNorm1d(c),
        ),
        _numpy_layer_kernel(
            "fused_numpy", "NumPy in cache-sized blocks, shared by the threads",
            lambda c, threads: fused_numpy.BatchNorm1d(c, threads=threads),
        ),
        _numpy_out_kernel(),
    ]
    kernels[3].warmup_note = "compiles at its first call for each dtype and rank (not timed)"
    if device != "cpu":
        for k in kernels:
            if k.name.startswith(("bnlib.numpy", "fused_numpy")):
                k.unavailable = "NumPy runs on the CPU: compare it with --device cpu"
    kernels.append(_triton_kernel(device))
    return kernels


def _triton_kernel(device: str) -> Kernel:
    name, description = "triton", "one Triton kernel per pass, forward and backward"
    if device != "cuda":
        return Kernel(name, description, _unavailable, unavailable="needs a CUDA GPU")
    try:
        from bnlib import triton as bn_triton  # noqa: PLC0415 - Triton is an optional extra, and a large import
    except ImportError as e:
        return Kernel(name, description, _unavailable, unavailable=str(e))
    return module_kernel(name, description, bn_triton.BatchNorm1d)


def _unavailable(x, dy, threads):  # pragma: no cover - never called
    raise RuntimeError("this kernel is unavailable")

