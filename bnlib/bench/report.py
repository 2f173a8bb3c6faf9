"""The report of a run: made (:func:`benchmark_report`), printed (:func:`format_table`), drawn (:func:`plot`).

A report is a JSON-ready dict: the machine (:func:`bnlib.bench.core.machine_info`), the
run's configuration, the copy bandwidth (``copy_bandwidth``, the fastest copy of the whole
run, the machine's ceiling, and the copies before and after the kernels), the kernels, one
result per kernel, shape and mode (the median over rounds and their spread), and the run's
``noise``: the load before and after, the cores other processes kept busy during the run,
the largest spread of a result and of the copy timed in each round (``max_copy_spread``), and
``warnings``, the sentences of :func:`bnlib.bench.core.noise_warnings` (empty for a
quiet run), which the table prints too. ``python -m bnlib.bench`` writes it as ``bench.json``;
the chapter "Benchmarks" reads a committed one back and draws it with :func:`draw`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bnlib.bench import memory
from bnlib.bench.core import (
    FAULT_FLOOR,
    MODES,
    SPREAD_LIMIT,
    CpuMeter,
    Kernel,
    Result,
    copy_bandwidth,
    fault_changes,
    machine_info,
    noise_warnings,
    run,
    spread,
)

__all__ = ["benchmark_report", "format_table", "format_faults", "AXES", "draw", "plot"]


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
    """:func:`run` plus the machine, its copy bandwidth and the run's noise: the JSON-ready report."""
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    info = machine_info(threads, device)
    meter = CpuMeter()
    copy_bw = copy_bandwidth(threads=threads, device=device)
    fresh_bw = copy_bandwidth(threads=threads, device=device, fresh=True)
    started = time.perf_counter()
    results = run(
        kernels, shapes, modes, min_run_time=min_run_time, rounds=rounds, threads=threads,
        device=device, copies=True, progress=progress,
    )
    # The copy again, after the kernels: the fastest of all its rounds, these and those timed
    # within the run, is the machine's ceiling (each result's roofline is to the copies of its
    # own rounds). The copy into fresh memory is measured again too, and both are kept: it varies.
    copy_bw_after = copy_bandwidth(threads=threads, device=device)
    fresh_bw_after = copy_bandwidth(threads=threads, device=device, fresh=True)
    within = [bw for r in results for bw in (r.round_copy_bandwidth or [])]
    peak_bw = max(copy_bw, copy_bw_after, *within)
    for r in results:
        if r.bandwidth is not None:
            r.peak_roofline = r.bandwidth / peak_bw
    info["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    other_cores = meter.other_cores()
    before = info["load_average_before"]
    spreads = [(_what(r), r.spread) for r in results if r.spread is not None]
    # One copy per round at each shape, shared by that shape's results: its spread, once per shape.
    copies = {"×".join(map(str, r.shape)): r.round_copy_bandwidth for r in results if r.round_copy_bandwidth}
    copy_spreads = [(shape, spread(rates)) for shape, rates in copies.items() if len(rates) > 1]
    faults = [(_what(r), r.round_page_faults) for r in results if r.round_page_faults]
    noise = {
        "load_average_before": before,
        "load_average_after": info["load_average_after"],
        "other_cores": other_cores,
        "max_spread": max((s for _, s in spreads), default=None),
        "max_copy_spread": max((s for _, s in copy_spreads), default=None),
        "spread_limit": SPREAD_LIMIT,
        "fault_floor": FAULT_FLOOR,
        "fault_changes": fault_changes(faults),
        "warnings": noise_warnings(cores=info["cores"] or 1, threads=threads, load_before=before[0] if before else None,
                                   other_cores=other_cores, spreads=spreads, copy_spreads=copy_spreads,
                                   faults=faults, reuse_memory=memory.reuses_memory()),
    }
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
        "copy_bandwidth": peak_bw,
        "copy_bandwidth_before": copy_bw,
        "copy_bandwidth_after": copy_bw_after,
        "fresh_copy_bandwidth": fresh_bw,
        "fresh_copy_bandwidth_after": fresh_bw_after,
        "kernels": [
            {"name": k.name, "description": k.description, "unavailable": k.unavailable, "note": k.warmup_note}
            for k in kernels
        ],
        "results": [{**asdict(r), "shape": list(r.shape)} for r in results],
        "noise": noise,
    }


def _what(r: Result) -> str:
    """A result as a warning names it: ``kernel at NxC, mode``."""
    return f"{r.kernel} at {'×'.join(map(str, r.shape))}, {r.mode}"


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.2f} ms"


def format_faults(rounds: Sequence[float] | None, between: str = "-", missing: str = "") -> str:
    """Page faults per call over the rounds: one number where they agree (rounded), else the fewest and the most."""
    if not rounds:
        return missing
    fewest, most = round(min(rounds)), round(max(rounds))
    return f"{fewest:,}" if fewest == most else f"{fewest:,}{between}{most:,}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table: one row per shape and kernel, both modes side by side."""
    results = [r if isinstance(r, Result) else Result(**{**r, "shape": tuple(r["shape"])}) for r in report["results"]]
    by = {(r.kernel, r.shape, r.mode): r for r in results}
    kernels = list(dict.fromkeys(r.kernel for r in results))
    shapes = list(dict.fromkeys(r.shape for r in results))
    modes = [m for m in MODES if any(r.mode == m for r in results)]
    head = ["shape", "kernel"]
    for mode in modes:
        head += [f"{mode}", "±", "×nn", "GB/s", "% copy", "faults"]
    rows = [head]
    for shape in shapes:
        for k in kernels:
            row = ["×".join(map(str, shape)), k]
            for mode in modes:
                r = by.get((k, shape, mode))
                if r is None or r.seconds is None:
                    note = "—" if r is None else f"({(r.error or '')[:40]})"
                    row += [note, "", "", "", "", ""]
                    continue
                flag = "!" if r.spread is not None and r.spread > SPREAD_LIMIT else ""
                row += [
                    _fmt_time(r.seconds),
                    f"{100 * r.spread:.0f}%{flag}" if r.spread is not None else "",
                    f"{r.ratio:.2f}" if r.ratio is not None else "",
                    f"{r.bandwidth / 1e9:.1f}" if r.bandwidth else "",
                    f"{100 * r.roofline:.0f}%" if r.roofline is not None else "",
                    format_faults(r.round_page_faults),
                ]
            rows.append(row)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [str(c).ljust(w) if j < 2 else str(c).rjust(w) for j, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    m = report["machine"]
    copy = report.get("copy_bandwidth")
    fresh = report.get("fresh_copy_bandwidth")
    footer = [
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} torch threads; device {m['device']}"
        + (f" ({m['gpu']})" if m.get("gpu") else "")
        + (f"; fresh memory: {m['memory']}" if m.get("memory") else ""),
        f"torch {m['torch']}, numpy {m['numpy']}, python {m['python']}; {m['date']}; "
        f"load average {', '.join(f'{v:.2f}' for v in (m.get('load_average_before') or []))} before, "
        f"{', '.join(f'{v:.2f}' for v in (m.get('load_average_after') or []))} after",
    ]
    if copy:
        after = report.get("fresh_copy_bandwidth_after")
        footer.append(
            f"copy bandwidth {copy / 1e9:.1f} GB/s at best (into existing memory)"
            + (f"; {fresh / 1e9:.1f} GB/s into fresh memory (clone)" if fresh else "")
            + (f", {after / 1e9:.1f} GB/s after the kernels" if after else "")
        )
    footer.append(
        "time: the median over rounds; ±: (slowest - fastest round) / median, ! above "
        f"{SPREAD_LIMIT:.0%}; ×nn: time / nn.BatchNorm1d's time in the same run; "
        "% copy: bytes that must move / time / the median copy timed in the same rounds; "
        "faults: page faults per call (the fewest-the most of the rounds where they differ)"
    )
    noise = report.get("noise") or {}
    if noise.get("other_cores") is not None:
        footer.append(f"other processes kept {noise['other_cores']:.2f} cores busy during the run")
    warnings = [f"WARNING: {w}" for w in noise.get("warnings", [])]
    return "\n".join(warnings + ([""] if warnings else []) + lines + [""] + footer + ([""] if warnings else [])
                     + warnings)


#: What :func:`draw` can put on the y axis: ``(label, logarithmic)``.
AXES = {
    "ratio": ("time / nn.BatchNorm1d's time (log scale)", True),
    "roofline": ("bytes that must move / time / copy bandwidth of the same rounds", False),
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
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=kernel)
    ax.set_xscale("log", base=2)
    if log:
        ax.set_yscale("log", base=2)
        ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"N, the batch size (C = {c}, float32)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def panel_channels(report: dict[str, Any]) -> list[int]:
    """The ``C`` of the report's ``(N, C)`` batches, one panel of :func:`plot` each.

    Those measured at more than one ``N`` where there are any: in the full sweep, the small goal
    batch's ``C`` would be a panel of one point. (``--quick`` measures every ``C`` at one ``N``.)
    """
    sizes: dict[int, set[int]] = {}
    for r in report["results"]:
        if len(r["shape"]) == 2:
            sizes.setdefault(r["shape"][1], set()).add(r["shape"][0])
    several = [c for c, ns in sizes.items() if len(ns) > 1]
    return sorted(several or sizes)


def plot(report: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """The :func:`draw` figures, one panel per ``C``, as ``ratio.png`` and ``roofline.png`` in ``out_dir``.

    Returns the files written (none if matplotlib is not installed).
    """
    try:  # matplotlib is optional (the book and grader extras), and slow to import
        import matplotlib  # noqa: PLC0415 - optional, and only for plots

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 - optional, and only for plots
    except ImportError:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    channels = panel_channels(report)
    for key in AXES:
        fig, axes = plt.subplots(1, len(channels), figsize=(4 * len(channels) + 1, 4), sharey=True, squeeze=False)
        for ax, c in zip(axes[0], channels, strict=True):
            draw(ax, report, key, c)
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"forward + backward on {report['machine']['device']}: {AXES[key][0]}")
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written

