"""The benchmark harness: every batch-norm kernel against ``torch.nn.BatchNorm1d``, side by side.

See :mod:`bnlib.bench.core` for how the timing works; ``python -m bnlib.bench`` runs it.
"""

from bnlib.bench.core import (
    AXES,
    FULL_SHAPES,
    GOAL_SHAPE,
    MODES,
    QUICK_SHAPES,
    REFERENCE,
    Kernel,
    Result,
    benchmark_report,
    builtin_kernels,
    bytes_moved,
    copy_bandwidth,
    draw,
    format_table,
    machine_info,
    main,
    module_kernel,
    plot,
    run,
)

__all__ = ["AXES", "FULL_SHAPES", "GOAL_SHAPE", "MODES", "QUICK_SHAPES", "REFERENCE", "Kernel", "Result",
           "benchmark_report", "builtin_kernels", "bytes_moved", "copy_bandwidth", "draw", "format_table",
           "machine_info", "main", "module_kernel", "plot", "run"]
