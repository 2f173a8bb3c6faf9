"""bnlib: Batch Normalization, the reference for the course book, graded notebooks and benchmarks.

Import the part you need; ``import bnlib`` itself loads neither NumPy layers nor torch.
These need NumPy only:

- :mod:`bnlib.numpy`: the book's equations as functions, and NumPy ``BatchNorm1d``, ``BatchNorm2d``,
  ``LayerNorm`` and ``GroupNorm``;
- :mod:`bnlib.fused_numpy`: the same ``BatchNorm1d`` in cache-sized blocks, on every core;
- :mod:`bnlib.gradcheck`: finite-difference gradient checks.

These need PyTorch (``pip install -e '.[torch]'``):

- :mod:`bnlib.torch`: hand-written ``torch.autograd.Function`` classes and drop-ins for ``nn.BatchNorm1d``,
  ``nn.BatchNorm2d``, ``nn.LayerNorm`` and ``nn.GroupNorm``;
  ``SyncBatchNorm`` across processes; batch norm folded into linear layers for inference;
- :mod:`bnlib.fused_torch`: the same ``BatchNorm1d`` written for ``torch.compile``;
- :mod:`bnlib.triton`: Triton kernels for a CUDA GPU (and Triton, the ``triton`` extra);
- :mod:`bnlib.bench`: the benchmark harness, ``python -m bnlib.bench``.
"""

__version__ = "0.1.0"
