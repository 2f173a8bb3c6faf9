"""bnlib: Batch Normalization, the reference for the course book, graded notebooks and benchmarks.

Import the part you need; ``import bnlib`` itself loads neither NumPy layers nor torch:

- :mod:`bnlib.numpy`: the book's equations as functions, and a NumPy ``BatchNorm1d``;
- :mod:`bnlib.torch`: a hand-written ``torch.autograd.Function`` and a drop-in ``nn.BatchNorm1d``;
  ``SyncBatchNorm`` across processes; batch norm folded into linear layers for inference;
- :mod:`bnlib.gradcheck`: finite-difference gradient checks.
"""

__version__ = "0.1.0"
