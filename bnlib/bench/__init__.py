"""The benchmark harness: every batch-norm kernel against ``torch.nn.BatchNorm1d``, side by side.

One module per concern, each importing only those before it:

- :mod:`bnlib.bench.memory`: where a run's fresh memory comes from (``--huge-pages``,
  ``--reuse-memory``), the environment a run starts in;
- :mod:`bnlib.bench.core`: what a measurement is (:class:`Kernel`, :class:`Result`, the timing
  rounds :func:`run`, the roofline's :func:`bytes_moved` and :func:`copy_bandwidth`, the
  machine, the shapes);
- :mod:`bnlib.bench.kernels`: the course's implementations as kernels (:func:`builtin_kernels`,
  :func:`module_kernel`);
- :mod:`bnlib.bench.student`: a student's ``BatchNorm1d``, loaded and checked, for ``--student``;
- :mod:`bnlib.bench.report`: the JSON-ready report, its table and its plots;
- :mod:`bnlib.bench.__main__`: the command line, ``python -m bnlib.bench`` (:func:`main`).

The names below are the harness's API, the same from whichever module they come.
"""

from typing import Any

from bnlib.bench.core import (
    FAULT_FLOOR,
    FULL_SHAPES,
    GOAL_SHAPE,
    LOAD_MARGIN,
    MID_SHAPE,
    MODES,
    QUICK_SHAPES,
    REFERENCE,
    SMALL_GOAL_SHAPE,
    SPREAD_LIMIT,
    CpuMeter,
    Kernel,
    Result,
    bytes_moved,
    copy_bandwidth,
    fault_changes,
    machine_info,
    minor_faults,
    noise_warnings,
    run,
    spread,
)
from bnlib.bench.kernels import builtin_kernels, module_kernel
from bnlib.bench.report import AXES, benchmark_report, draw, format_faults, format_table, panel_channels, plot

__all__ = ["AXES", "FAULT_FLOOR", "FULL_SHAPES", "GOAL_SHAPE", "LOAD_MARGIN", "MID_SHAPE", "MODES", "QUICK_SHAPES",
           "REFERENCE", "SMALL_GOAL_SHAPE", "SPREAD_LIMIT", "CpuMeter", "Kernel", "Result", "benchmark_report",
           "builtin_kernels", "bytes_moved", "copy_bandwidth", "draw", "fault_changes", "format_faults",
           "format_table", "machine_info", "main", "minor_faults", "module_kernel", "noise_warnings",
           "panel_channels", "plot", "run", "spread"]


def __getattr__(name: str) -> Any:
    """``bnlib.bench.main``, the command line, imported from ``__main__`` when first asked for.

    Importing it here eagerly would put ``bnlib.bench.__main__`` in ``sys.modules`` before
    ``python -m bnlib.bench`` runs it, and Python warns about that.
    """
    if name == "main":
        from bnlib.bench.__main__ import main  # noqa: PLC0415 - see the docstring: python -m would warn

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
