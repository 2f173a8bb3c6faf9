r"""The benchmark harness: every batch-norm kernel against ``torch.nn.BatchNorm1d``, side by side.

Each kernel is timed with :mod:`torch.utils.benchmark` (its ``Timer`` handles warm-up, the
number of calls per measurement, threads and CUDA synchronisation) on the same inputs as
``nn.BatchNorm1d`` in the same run, in rounds that take turns, so that a machine busy with
something else slows everyone alike. Two numbers come out of each measurement:

- the **ratio** to ``nn.BatchNorm1d``'s time on the same shape (below 1 is faster);
- the **achieved bandwidth**: the bytes a batch-norm step must move divided by its time,
  as a fraction of the machine's copy bandwidth measured in the same run (a roofline).
  The bytes that must move are the tensors the size of ``x`` that go in and out:
  ``x`` and ``y`` for the forward pass; ``x``, ``y``, ``x`` again, ``dy`` and ``dx`` for
  forward and backward (:func:`bytes_moved`). A kernel that does not keep the batch in
  cache also reads ``x`` (and ``dy``) a second time for the statistics, so it cannot
  reach 100%: 5/8 of the copy bandwidth at best, for forward and backward.

From the command line::

    python -m bnlib.bench --quick                # seconds: a few shapes
    python -m bnlib.bench                        # the full sweep (minutes)
    python -m bnlib.bench --student bn-torch.ipynb   # add your BatchNorm1d (a notebook or a .py)

It prints a table and writes ``bench.json`` and plots into ``--out``. The chapter
"Benchmarks" renders a full run's JSON. :mod:`bnlib.bench.student` loads and checks a student's
``BatchNorm1d`` for ``--student``, and times one for the autograder's speed column.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.benchmark as benchmark
from torch import nn

__all__ = [
    "FULL_SHAPES",
    "QUICK_SHAPES",
    "GOAL_SHAPE",
    "MODES",
    "bytes_moved",
    "copy_bandwidth",
    "Kernel",
    "builtin_kernels",
    "module_kernel",
    "REFERENCE",
    "Result",
    "run",
    "machine_info",
    "format_table",
    "AXES",
    "draw",
    "plot",
    "main",
]

#: The shape the course's speed goals are stated at: 65,536 examples of 256 features.
GOAL_SHAPE: tuple[int, ...] = (65536, 256)

#: ``--quick``: a small batch, the goal shape and an ``(N, C, L)`` batch.
QUICK_SHAPES: tuple[tuple[int, ...], ...] = ((1024, 64), GOAL_SHAPE, (32, 64, 256))


def _full_shapes() -> tuple[tuple[int, ...], ...]:
    """N from 64 to 65,536 and C from 16 to 4,096 (up to 2^24 elements), and (N, C, L) batches."""
    two_d = [
        (n, c)
        for c in (16, 256, 4096)
        for n in (64, 256, 1024, 4096, 16384, 65536)
        if n * c <= 2**24
    ]
    return tuple(two_d) + ((32, 64, 1024), (256, 256, 64), (16, 1024, 128))


#: The full sweep.
FULL_SHAPES: tuple[tuple[int, ...], ...] = _full_shapes()

#: What is timed: one training-mode forward pass, or forward and backward together.
MODES: tuple[str, ...] = ("forward", "forward+backward")

#: The reference every ratio is taken to.
REFERENCE = "nn.BatchNorm1d"


# --------------------------------------------------------------------------------------------
# The roofline: bytes that must move, and how fast this machine moves them.
# --------------------------------------------------------------------------------------------


def bytes_moved(shape: Sequence[int], mode: str, itemsize: int = 4) -> int:
    """The bytes a batch-norm step must read and write: each tensor the size of ``x`` once.

    Forward: read ``x``, write ``y`` (2 tensors). Forward and backward: the forward's two,
    then read ``x`` and ``dy`` and write ``dx`` (5). The statistics and parameters, ``(C,)``,
    are negligible.
    """
    tensors = {"forward": 2, "forward+backward": 5}[mode]
    return tensors * math.prod(shape) * itemsize


def _timer(fn: Callable[[], Any], threads: int, label: str = "", sub_label: str = "", description: str = "") -> benchmark.Timer:
    return benchmark.Timer(
        stmt="fn()",
        globals={"fn": fn},
        num_threads=threads,
        label=label,
        sub_label=sub_label,
        description=description,
    )


def copy_bandwidth(
    nbytes: int = 64 * 2**20,
    threads: int | None = None,
    min_run_time: float = 0.1,
    rounds: int = 3,
    device: str = "cpu",
    fresh: bool = False,
) -> float:
    """The machine's copy bandwidth in bytes per second: ``dst.copy_(src)``, read plus write.

    Like the kernels, the copy is timed in several rounds and the fastest is kept: it is the
    hardware's ceiling. With ``fresh``, the median round is kept instead: what a new tensor
    costs varies with the operating system's state, and the typical cost is the one kernels pay.

    Args:
        nbytes: the size of the tensor copied. Default: 64 MiB (larger than most caches)
        threads: torch threads. Default: ``torch.get_num_threads()``
        min_run_time: seconds of timing per round. Default: 0.1
        rounds: Default: 3
        device: Default: ``"cpu"``
        fresh: time ``src.clone()`` instead: the copy goes to newly allocated memory, which
            the operating system hands over page by page on a CPU. Default: ``False``
    """
    threads = threads or torch.get_num_threads()
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    fn = src.clone if fresh else (lambda: dst.copy_(src))
    times = sorted(_timer(fn, threads).blocked_autorange(min_run_time=min_run_time).median for _ in range(rounds))
    seconds = times[len(times) // 2] if fresh else times[0]
    return 2 * src.numel() * 4 / seconds


# --------------------------------------------------------------------------------------------
# The kernels: each prepares a forward and a forward+backward call on given inputs.
# --------------------------------------------------------------------------------------------


@dataclass
class Kernel:
    """A batch-norm implementation the harness can time.

    ``prepare(x, dy, threads)`` gets float32 tensors (on the run's device) and the number of
    threads to use, and returns the two calls to time, ``(forward, forward_backward)``, each
    taking no argument. A kernel that cannot run here says why in ``unavailable`` (it is
    listed, not timed).
    """

    name: str
    description: str
    prepare: Callable[[torch.Tensor, torch.Tensor, int], tuple[Callable[[], Any], Callable[[], Any]]]
    unavailable: str | None = None
    warmup_note: str = ""


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
    from bnlib import fused_numpy
    from bnlib import numpy as bnp

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
    from bnlib import fused_numpy, fused_torch
    from bnlib import numpy as bnp
    from bnlib import torch as bnt

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
        from bnlib import triton as bn_triton
    except ImportError as e:
        return Kernel(name, description, _unavailable, unavailable=str(e))
    return module_kernel(name, description, bn_triton.BatchNorm1d)


def _unavailable(x, dy, threads):  # pragma: no cover - never called
    raise RuntimeError("this kernel is unavailable")


# --------------------------------------------------------------------------------------------
# Running: rounds of measurements, ratios and bandwidths.
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One kernel at one shape and mode. Times in seconds; ``ratio`` to ``nn.BatchNorm1d``."""

    kernel: str
    shape: tuple[int, ...]
    mode: str
    seconds: float | None = None
    iqr: float | None = None
    runs: int = 0
    ratio: float | None = None
    bandwidth: float | None = None  #: bytes that must move / seconds, in bytes per second
    roofline: float | None = None  #: bandwidth / copy bandwidth
    error: str | None = None


def _compile_in_process() -> None:
    """No pool of background compile workers: they would compete for the cores being timed."""
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1


def run(
    kernels: Sequence[Kernel],
    shapes: Iterable[Sequence[int]],
    modes: Sequence[str] = MODES,
    *,
    min_run_time: float = 0.2,
    rounds: int = 3,
    threads: int | None = None,
    device: str = "cpu",
    copy_bw: float | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Time every kernel at every shape and mode, ``rounds`` times in turn.

    Each round's measurement is the median of ``Timer.blocked_autorange``'s blocks; the
    result is the fastest round's, the one least disturbed by whatever else the machine was
    doing (on a shared machine, other processes take cores away for milliseconds at a time).

    The first kernel is the reference for the ratios (``nn.BatchNorm1d``). A kernel that
    raises gets an ``error`` and no time; the others go on.

    Args:
        kernels: what to time; ``unavailable`` ones are listed with their reason.
        shapes: ``(N, C)`` or ``(N, C, L)``, float32.
        modes: from :data:`MODES`. Default: both
        min_run_time: seconds per measurement (``Timer.blocked_autorange``). Default: 0.2
        rounds: how many times the kernels take turns. Default: 3
        threads: torch threads. Default: ``torch.get_num_threads()``
        device: Default: ``"cpu"``
        copy_bw: the copy bandwidth for the roofline, bytes/s. Default: ``None`` (no roofline)
        seed: for the inputs. Default: 0
        progress: called with a line of text as the run goes. Default: ``None``
    """
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    _compile_in_process()
    results: list[Result] = []
    say = progress or (lambda line: None)
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        generator = torch.Generator().manual_seed(seed)
        x = (torch.randn(shape, generator=generator) * 2 + 3).to(device)
        dy = torch.randn(shape, generator=generator).to(device)
        calls: dict[str, dict[str, Callable[[], Any]]] = {}
        errors: dict[str, str] = {}
        for k in kernels:
            if k.unavailable:
                errors[k.name] = k.unavailable
                continue
            try:
                forward, forward_backward = k.prepare(x, dy, threads)
                calls[k.name] = {"forward": forward, "forward+backward": forward_backward}
                for mode in modes:  # warm up: compilation, caches, lazy initialisation
                    calls[k.name][mode]()
            except Exception as e:
                errors[k.name] = f"{type(e).__name__}: {e}"
                calls.pop(k.name, None)
        measured: dict[tuple[str, str], list[benchmark.Measurement]] = {}
        for round_ in range(rounds):
            for mode in modes:
                for k in kernels:
                    if k.name not in calls:
                        continue
                    timer = _timer(calls[k.name][mode], threads, label=mode, sub_label=str(shape), description=k.name)
                    try:
                        m = timer.blocked_autorange(min_run_time=min_run_time)
                    except Exception as e:
                        errors[k.name] = f"{type(e).__name__}: {e}"
                        calls.pop(k.name)
                        continue
                    measured.setdefault((k.name, mode), []).append(m)
            say(f"{shape}: round {round_ + 1}/{rounds} done")
        for mode in modes:
            reference = None
            for k in kernels:
                r = Result(k.name, shape, mode)
                if (k.name, mode) in measured and k.name not in errors:
                    rounds_measured = measured[(k.name, mode)]
                    m = min(rounds_measured, key=lambda m: m.median)  # the least-disturbed round
                    r.seconds, r.iqr = m.median, m.iqr
                    r.runs = sum(len(m.times) * m.number_per_run for m in rounds_measured)
                    r.bandwidth = bytes_moved(shape, mode, x.element_size()) / m.median
                    if copy_bw:
                        r.roofline = r.bandwidth / copy_bw
                    if reference is None and k is kernels[0]:
                        reference = m.median
                    if reference:
                        r.ratio = m.median / reference
                else:
                    r.error = errors.get(k.name, "not measured")
                results.append(r)
        del calls, x, dy
    return results


# --------------------------------------------------------------------------------------------
# The machine, the table, the plots.
# --------------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def machine_info(threads: int, device: str = "cpu") -> dict[str, Any]:
    """The machine, software versions, threads, date and load: what a reader needs to weigh the numbers."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "triton": None,
        "platform": platform.platform(),
        "transparent_hugepages": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "load_average_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": _git_commit(),
    }
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        info["triton"] = version("triton")
    with contextlib.suppress(Exception):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    return info


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.2f} ms"


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table: one row per shape and kernel, both modes side by side."""
    results = [r if isinstance(r, Result) else Result(**{**r, "shape": tuple(r["shape"])}) for r in report["results"]]
    by = {(r.kernel, r.shape, r.mode): r for r in results}
    kernels = list(dict.fromkeys(r.kernel for r in results))
    shapes = list(dict.fromkeys(r.shape for r in results))
    modes = [m for m in MODES if any(r.mode == m for r in results)]
    head = ["shape", "kernel"]
    for mode in modes:
        head += [f"{mode}", "×nn", "GB/s", "% copy"]
    rows = [head]
    for shape in shapes:
        for k in kernels:
            row = ["×".join(map(str, shape)), k]
            for mode in modes:
                r = by.get((k, shape, mode))
                if r is None or r.seconds is None:
                    note = "—" if r is None else f"({(r.error or '')[:40]})"
                    row += [note, "", "", ""]
                    continue
                row += [
                    _fmt_time(r.seconds),
                    f"{r.ratio:.2f}" if r.ratio is not None else "",
                    f"{r.bandwidth / 1e9:.1f}" if r.bandwidth else "",
                    f"{100 * r.roofline:.0f}%" if r.roofline is not None else "",
                ]
            rows.append(row)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        cells = [str(c).ljust(w) if j < 2 else str(c).rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    m = report["machine"]
    copy = report.get("copy_bandwidth")
    fresh = report.get("fresh_copy_bandwidth")
    footer = [
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} torch threads; device {m['device']}"
        + (f" ({m['gpu']})" if m.get("gpu") else ""),
        f"torch {m['torch']}, numpy {m['numpy']}, python {m['python']}; {m['date']}; "
        f"load average {', '.join(f'{v:.2f}' for v in (m.get('load_average_before') or []))} before, "
        f"{', '.join(f'{v:.2f}' for v in (m.get('load_average_after') or []))} after",
    ]
    if copy:
        after = report.get("fresh_copy_bandwidth_after")
        footer.append(
            f"copy bandwidth {copy / 1e9:.1f} GB/s (into existing memory)"
            + (f"; {fresh / 1e9:.1f} GB/s into fresh memory (clone)" if fresh else "")
            + (f", {after / 1e9:.1f} GB/s after the kernels" if after else "")
        )
    footer.append("×nn: time / nn.BatchNorm1d's time in the same run; % copy: bytes that must move / time / copy bandwidth")
    return "\n".join(lines + [""] + footer)


#: What :func:`draw` can put on the y axis: ``(label, logarithmic)``.
AXES = {
    "ratio": ("time / nn.BatchNorm1d's time (log scale)", True),
    "roofline": ("bytes that must move / time / copy bandwidth", False),
}


def draw(ax: Any, report: dict[str, Any], key: str = "ratio", c: int = 256, mode: str = "forward+backward") -> None:
    """One line per kernel on a matplotlib ``ax``: ``key`` (of :data:`AXES`) against ``N``, for ``(N, c)`` batches."""
    ylabel, log = AXES[key]
    results = [
        r for r in report["results"]
        if r["mode"] == mode and r.get(key) is not None and len(r["shape"]) == 2 and r["shape"][1] == c
    ]
    for kernel in dict.fromkeys(r["kernel"] for r in results):
        points = sorted((r["shape"][0], r[key]) for r in results if r["kernel"] == kernel)
        ax.plot(*zip(*points), marker="o", markersize=3, label=kernel)
    ax.set_xscale("log", base=2)
    if log:
        ax.set_yscale("log", base=2)
        ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"N, the batch size (C = {c}, float32)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _channels(report: dict[str, Any]) -> list[int]:
    return sorted({r["shape"][1] for r in report["results"] if len(r["shape"]) == 2})


def plot(report: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """The :func:`draw` figures, one panel per ``C``, as ``ratio.png`` and ``roofline.png`` in ``out_dir``.

    Returns the files written (none if matplotlib is not installed).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    channels = _channels(report)
    for key in AXES:
        fig, axes = plt.subplots(1, len(channels), figsize=(4 * len(channels) + 1, 4), sharey=True, squeeze=False)
        for ax, c in zip(axes[0], channels):
            draw(ax, report, key, c)
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"forward + backward on {report['machine']['device']}: {AXES[key][0]}")
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# The command line.
# --------------------------------------------------------------------------------------------


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.lower().replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a shape is N,C or N,C,L with positive sizes, got {text!r}")
    return shape


def benchmark_report(
    kernels: Sequence[Kernel],
    shapes: Sequence[Sequence[int]],
    *,
    modes: Sequence[str] = MODES,
    min_run_time: float = 0.2,
    rounds: int = 3,
    threads: int | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """:func:`run` plus the machine and its copy bandwidth: the JSON-ready report."""
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    info = machine_info(threads, device)
    copy_bw = copy_bandwidth(threads=threads, device=device)
    fresh_bw = copy_bandwidth(threads=threads, device=device, fresh=True)
    started = time.perf_counter()
    results = run(
        kernels, shapes, modes, min_run_time=min_run_time, rounds=rounds, threads=threads,
        device=device, progress=progress,
    )
    # The copy again, after the kernels: the fastest of all its rounds is the machine's. The
    # copy into fresh memory is measured again too, and both are kept: it varies.
    copy_bw = max(copy_bw, copy_bandwidth(threads=threads, device=device))
    fresh_bw_after = copy_bandwidth(threads=threads, device=device, fresh=True)
    for r in results:
        if r.bandwidth is not None:
            r.roofline = r.bandwidth / copy_bw
    info["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "machine": info,
        "config": {
            "shapes": [list(s) for s in shapes],
            "modes": list(modes),
            "min_run_time": min_run_time,
            "rounds": rounds,
            "dtype": "float32",
            "seconds": round(time.perf_counter() - started, 1),
        },
        "copy_bandwidth": copy_bw,
        "fresh_copy_bandwidth": fresh_bw,
        "fresh_copy_bandwidth_after": fresh_bw_after,
        "kernels": [
            {"name": k.name, "description": k.description, "unavailable": k.unavailable, "note": k.warmup_note}
            for k in kernels
        ],
        "results": [{**asdict(r), "shape": list(r.shape)} for r in results],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bnlib.bench``: see the module's docstring, or ``--help``."""
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
    args = parser.parse_args(argv)
    if args.huge_pages and os.environ.get("THP_MEM_ALLOC_ENABLE") != "1":
        # PyTorch reads the variable once, at its first allocation: run again in a new process.
        argv = list(sys.argv[1:] if argv is None else argv)
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"}
        return subprocess.call([sys.executable, "-m", "bnlib.bench", *argv], env=env)

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
        from bnlib.bench import student

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
