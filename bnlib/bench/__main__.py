r"""``python -m bnlib.bench``: time batch-norm kernels against ``torch.nn.BatchNorm1d``, side by side.

From the command line::

    python -m bnlib.bench --quick                # seconds: a few shapes
    python -m bnlib.bench                        # the full sweep (minutes)
    python -m bnlib.bench --student bn-torch.ipynb   # add your BatchNorm1d (a notebook or a .py)
    python -m bnlib.bench --reuse-memory --shape 65536,256   # no fresh memory (bnlib.bench.memory)

It prints a table and writes ``bench.json`` and plots into ``--out``. The chapter
"Benchmarks" renders a full run's JSON. :mod:`bnlib.bench.student` loads and checks a
student's ``BatchNorm1d`` for ``--student``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from bnlib.bench import memory, student
from bnlib.bench.core import FULL_SHAPES, QUICK_SHAPES, REFERENCE
from bnlib.bench.kernels import builtin_kernels
from bnlib.bench.report import benchmark_report, format_table, plot

__all__ = ["main"]


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.lower().replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a shape is N,C or N,C,L with positive sizes, got {text!r}")
    return shape



def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bnlib.bench``: see this module's docstring, or ``--help``. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m bnlib.bench",
        description="Time batch-norm kernels against torch.nn.BatchNorm1d, side by side (float32).",
    )
    parser.add_argument("--quick", action="store_true", help="three shapes, short measurements (seconds)")
    parser.add_argument("--shape", type=_parse_shape, action="append", metavar="N,C[,L]",
                        help="time these shapes instead (repeatable)")
    parser.add_argument("--kernels", nargs="+", metavar="NAME",
                        help="only these kernels (nn.BatchNorm1d is always timed)")
    parser.add_argument("--student", type=Path, metavar="PATH",
                        help="also time the BatchNorm1d of this notebook (.ipynb) or module (.py)")
    parser.add_argument("--class-name", default="BatchNorm1d", help="the student's class (default: BatchNorm1d)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--rounds", type=int, default=None, help="turns each kernel takes (default 3; quick 2)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds per measurement (default 0.2; quick 0.05)")
    parser.add_argument("--out", type=Path, default=Path("_build/bench"), help="where bench.json and plots go")
    parser.add_argument("--json", type=Path, default=None, help="write the JSON here instead of OUT/bench.json")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--huge-pages", action="store_true",
                        help="run with THP_MEM_ALLOC_ENABLE=1: PyTorch's CPU allocator asks for 2 MiB pages, "
                             "which makes fresh memory much cheaper (for every kernel)")
    parser.add_argument("--reuse-memory", action="store_true",
                        help="run with glibc keeping freed memory for the process: a step's new tensors reuse "
                             "the last step's memory, as on a GPU (for every kernel)")
    args = parser.parse_args(argv)
    try:
        env = memory.environment(os.environ, args.huge_pages, args.reuse_memory)
    except memory.ReuseUnavailable as e:
        parser.error(str(e))
    if env is not None:
        # The C library and PyTorch read these variables once, when the process starts: run again in a new one.
        if os.environ.get(memory.RERUN):
            parser.error(f"started again for {memory.mode(env)}, the environment still lacks it: something "
                         f"between here and Python removed it (a wrapper of {sys.executable}?)")
        argv = list(sys.argv[1:] if argv is None else argv)
        return subprocess.call([sys.executable, "-m", "bnlib.bench", *argv], env={**env, memory.RERUN: "1"})

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    kernels = builtin_kernels(device)
    if args.kernels:
        names = {k.name for k in kernels}
        unknown = sorted(set(args.kernels) - names)
        if unknown:
            parser.error(f"unknown kernel(s) {unknown}; choose from {sorted(names)}")
        kernels = [k for k in kernels if k.name == REFERENCE or k.name in args.kernels]
    if args.student:
        try:
            kernels.append(student.student_kernel(args.student, args.class_name))
        except student.StudentKernelError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    shapes = args.shape or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    rounds = args.rounds or (2 if args.quick else 3)
    min_run_time = args.min_run_time or (0.05 if args.quick else 0.2)
    if rounds < 1 or min_run_time <= 0:
        parser.error("--rounds must be at least 1 and --min-run-time positive")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = benchmark_report(
        kernels, shapes, min_run_time=min_run_time, rounds=rounds, threads=args.threads,
        device=device, progress=progress,
    )
    print(format_table(report))
    json_path = args.json or args.out / "bench.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    written = [] if args.no_plots else plot(report, args.out)
    print(f"\nwrote {json_path}" + "".join(f", {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
