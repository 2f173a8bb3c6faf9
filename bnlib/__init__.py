"""bnlib: Batch Normalization, the reference for the course book, graded notebooks and benchmarks.

Import the part you need; ``import bnlib`` itself loads neither NumPy layers nor torch.
These need NumPy only:

- :mod:`bnlib.numpy`: the book's equations as functions, and a NumPy ``BatchNorm1d``;
- :mod:`bnlib.fused_numpy`: the same layer in cache-sized blocks, on every core;
- :mod:`bnlib.gradcheck`: finite-difference gradient checks.

These need PyTorch (``pip install -e '.[torch]'``):

- :mod:`bnlib.torch`: a hand-written ``torch.autograd.Function`` and a drop-in ``nn.BatchNorm1d``;
  ``SyncBatchNorm`` across processes; batch norm folded into linear layers for inference;
- :mod:`bnlib.fused_torch`: the same layer written for ``torch.compile``;
- :mod:`bnlib.triton`: Triton kernels for a CUDA GPU (and Triton, the ``triton`` extra);
- :mod:`bnlib.bench`: the benchmark harness, ``python -m bnlib.bench``.
"""

__version__ = "0.1.0"
