r"""What a measurement is: the kernels' contract, the timing rounds, the roofline, the machine.

Each kernel is timed with :mod:`torch.utils.benchmark` (its ``Timer`` handles warm-up, the
number of calls per measurement, threads and CUDA synchronisation) on the same inputs as
``nn.BatchNorm1d`` in the same run, in rounds that take turns, so that a machine busy with
something else slows everyone alike. Two numbers come out of each measurement:

- the **ratio** to ``nn.BatchNorm1d``'s time on the same shape (below 1 is faster);
- the **achieved bandwidth**: the bytes a batch-norm step must move divided by its time,
  as a fraction of the copy bandwidth measured beside it (a roofline): a copy of 64 MiB is
  timed at the start of every round at each shape, and the kernel's median time is set
  against the median of those copies, as its ratio is set against the reference's median.
  The bytes that must move are the tensors the size of ``x`` that go in and out:
  ``x`` and ``y`` for the forward pass; ``x``, ``y``, ``x`` again, ``dy`` and ``dx`` for
  forward and backward (:func:`bytes_moved`). A kernel that does not keep the batch in
  cache also reads ``x`` (and ``dy``) a second time for the statistics, so it cannot
  reach 100%: 5/8 of the copy bandwidth at best, for forward and backward.

A :class:`Kernel` is anything that can prepare those two calls; :mod:`bnlib.bench.kernels`
makes them from the course's implementations. :func:`run` times them and gives one
:class:`Result` per kernel, shape and mode; :func:`machine_info` records what a reader needs
to weigh the numbers (among them the load average, before and after).

**A benchmark that knows when it is lied to.** Each kernel's time is the *median* of its
rounds, reported with the *spread* between them, ``(slowest - fastest) / median``. A machine
busy with something else shows in two ways, and :func:`noise_warnings` says so for both:
the rounds disagree (spread above :data:`SPREAD_LIMIT`), or other processes used the cores
the run needed (:class:`CpuMeter`: the machine's busy time from ``/proc/stat`` minus this
process's own, over the run; the load average before the run too). On a machine with as many
torch threads as cores, the second is the treacherous one: torch's OpenMP threads spin-wait
for a core that another process holds, and a 36 µs operation can take 46 ms; with
``--threads 1`` the run leaves a core to the others.

A third disturbance comes from inside the process: the C library's memory. Each
measurement counts the page faults of its calls (``getrusage``'s minor faults, every thread
of the process), per call, on a CPU. A tensor written into fresh memory faults once per
page; one written into memory the C library kept from the last call does not fault at all.
glibc decides which by a threshold that moves as blocks are freed (from 128 KiB up to
32 MiB on 64-bit Linux), so at some sizes the same kernel faults in one round and not in
the next, and its rounds time two different things. :func:`fault_changes` lists those
measurements and :func:`noise_warnings` counts them. Faults are counted, not bytes: where
the system gives huge pages to every large block (transparent huge pages ``always``), a
fresh 16 MiB tensor is 8 faults, below :data:`FAULT_FLOOR`, and such changes go unseen.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.benchmark as benchmark

from bnlib.bench import memory

try:  # POSIX only: elsewhere page faults are not counted
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

__all__ = [
    "FULL_SHAPES",
    "QUICK_SHAPES",
    "GOAL_SHAPE",
    "MODES",
    "REFERENCE",
    "bytes_moved",
    "copy_bandwidth",
    "SPREAD_LIMIT",
    "LOAD_MARGIN",
    "FAULT_FLOOR",
    "MID_SHAPE",
    "minor_faults",
    "fault_changes",
    "Kernel",
    "Result",
    "spread",
    "CpuMeter",
    "noise_warnings",
    "run",
    "machine_info",
]

#: The shape the course's speed goals are stated at: 65,536 examples of 256 features.
GOAL_SHAPE: tuple[int, ...] = (65536, 256)

#: The small batch the goal for per-call costs is stated at: 1,024 examples of 64 features.
SMALL_GOAL_SHAPE: tuple[int, ...] = (1024, 64)

#: 16 MiB per tensor: below glibc's largest mmap threshold, where fresh memory comes and goes
#: (chapter "Benchmarks"), and the GPU check's second shape.
MID_SHAPE: tuple[int, ...] = (16384, 256)

#: ``--quick``: the small goal batch, the goal shape and an ``(N, C, L)`` batch.
QUICK_SHAPES: tuple[tuple[int, ...], ...] = (SMALL_GOAL_SHAPE, GOAL_SHAPE, (32, 64, 256))


def _full_shapes() -> tuple[tuple[int, ...], ...]:
    """N from 64 to 65,536 and C from 16 to 4,096 (up to 2^24 elements), the small goal batch, and (N, C, L) batches."""
    two_d = [
        (n, c)
        for c in (16, 256, 4096)
        for n in (64, 256, 1024, 4096, 16384, 65536)
        if n * c <= 2**24
    ]
    return tuple(two_d) + (SMALL_GOAL_SHAPE, (32, 64, 1024), (256, 256, 64), (16, 1024, 128))


#: The full sweep.
FULL_SHAPES: tuple[tuple[int, ...], ...] = _full_shapes()

#: What is timed: one training-mode forward pass, or forward and backward together.
MODES: tuple[str, ...] = ("forward", "forward+backward")

#: The reference every ratio is taken to.
REFERENCE = "nn.BatchNorm1d"

#: Rounds whose times differ by more than this fraction of their median are flagged (:func:`spread`).
SPREAD_LIMIT = 0.15

#: Cores other processes may use before a run is flagged as loaded: the run needs its own
#: threads, and other processes may use the rest plus this margin (:func:`noise_warnings`).
LOAD_MARGIN = 0.5

#: Rounds whose page faults per call differ by fewer than this are not flagged, whatever the
#: fraction (a few faults a call are the harness's own, and cost microseconds).
FAULT_FLOOR = 16


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


def _timer(
    fn: Callable[[], Any], threads: int, label: str = "", sub_label: str = "", description: str = ""
) -> benchmark.Timer:
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
    copy = _copy_timer(nbytes, threads, device, fresh)
    rates = [copy(min_run_time) for _ in range(rounds)]
    return statistics.median(rates) if fresh else max(rates)


def _copy_timer(nbytes: int, threads: int, device: str, fresh: bool = False) -> Callable[[float], float]:
    """A copy of ``nbytes`` ready to time: called with a time to spend, it returns bytes per second."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    timer = _timer(src.clone if fresh else (lambda: dst.copy_(src)), threads)
    return lambda min_run_time: 2 * src.numel() * 4 / timer.blocked_autorange(min_run_time=min_run_time).median




# --------------------------------------------------------------------------------------------
# What the harness times: a kernel prepares a forward and a forward+backward call.
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



# --------------------------------------------------------------------------------------------
# Running: rounds of measurements, ratios and bandwidths.
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One kernel at one shape and mode. Times in seconds; ``ratio`` to ``nn.BatchNorm1d``.

    ``seconds`` is the median of ``round_seconds``, one time per round (each the median of
    that round's blocks); ``spread`` is :func:`spread` of the rounds; ``iqr`` the
    interquartile range of the blocks of the median round. ``round_ratios`` pairs each
    round's time with the reference's in the same round: a disturbance that lasts longer
    than a round slows both and leaves their ratio, so the range of ``round_ratios`` is how
    uncertain ``ratio`` is. ``round_rooflines`` pairs each round's bandwidth in the same way
    with the copy bandwidth measured in that round (``round_copy_bandwidth``, the same for
    every kernel at a shape): the fraction of what the memory gave at the time.
    ``roofline`` is built like ``ratio``: ``bandwidth`` (from the median time) over the
    median of the shape's round copies. It does not depend on what else the run timed,
    where ``peak_roofline``, the bandwidth over the fastest copy of the whole run (set by
    :func:`bnlib.bench.report.benchmark_report`), falls as the run grows: the more copies
    are timed, the faster the fastest of them. ``round_page_faults`` counts, in each round,
    the page faults of every call timed (warm-up and calibration included) over the number of
    calls: about the pages of fresh memory a call wrote (:func:`minor_faults`; CPU runs only).
    """

    kernel: str
    shape: tuple[int, ...]
    mode: str
    seconds: float | None = None
    spread: float | None = None
    round_seconds: list[float] | None = None
    iqr: float | None = None
    runs: int = 0
    ratio: float | None = None
    round_ratios: list[float] | None = None
    bandwidth: float | None = None  #: bytes that must move / seconds, in bytes per second
    roofline: float | None = None  #: bandwidth / the median of round_copy_bandwidth
    round_copy_bandwidth: list[float] | None = None  #: bytes/s of a copy timed in each round
    round_rooflines: list[float] | None = None  #: each round's bandwidth / that round's copy bandwidth
    peak_roofline: float | None = None  #: bandwidth / the fastest copy of the whole run
    page_faults: float | None = None  #: the median over rounds of round_page_faults
    round_page_faults: list[float] | None = None  #: page faults per call in each round (None: not counted)
    error: str | None = None


def spread(times: Sequence[float]) -> float:
    """``(slowest - fastest) / median`` of the rounds: 0 when they agree; 0.5 when they differ by half the median."""
    ordered = sorted(times)
    return (ordered[-1] - ordered[0]) / statistics.median(ordered) if ordered else 0.0


def minor_faults() -> int | None:
    """The minor page faults of this process so far, every thread (``getrusage``); ``None`` where not POSIX.

    A minor fault is the operating system mapping a page the process touches for the first
    time: for a kernel, a page of fresh memory (4 KiB, or 2 MiB in huge pages).
    """
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class _Counted:
    """A call to time that counts how often it is called, for the page faults per call.

    The count adds under 0.1 µs to every call of every kernel alike (the fastest call timed
    takes tens of µs).
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.fn()


def _busy_seconds() -> float | None:
    """Seconds the machine's cores have been busy since boot, all processes together (``/proc/stat``)."""
    text = _read("/proc/stat")
    if not text or not text.startswith("cpu "):
        return None
    # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    ticks = [int(v) for v in text.splitlines()[0].split()[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """How many cores *other* processes kept busy while this one ran: start it, then read :meth:`other_cores`.

    The machine's busy time (``/proc/stat``, every process) minus this process's own CPU time
    (its threads and waited-for children included), over the wall-clock time. ``None`` where
    ``/proc/stat`` cannot be read.
    """

    def __init__(self) -> None:
        self.start_busy, self.start_own, self.start_wall = _busy_seconds(), _own_seconds(), time.perf_counter()

    def other_cores(self) -> float | None:
        busy, wall = _busy_seconds(), time.perf_counter() - self.start_wall
        if busy is None or self.start_busy is None or wall <= 0:
            return None
        others = (busy - self.start_busy) - (_own_seconds() - self.start_own)
        return max(0.0, others / wall)


def noise_warnings(
    *,
    cores: int,
    threads: int,
    load_before: float | None = None,
    other_cores: float | None = None,
    spreads: Sequence[tuple[str, float]] = (),
    copy_spreads: Sequence[tuple[str, float]] = (),
    faults: Sequence[tuple[str, Sequence[float]]] = (),
    reuse_memory: bool = False,
) -> list[str]:
    """What makes a run's numbers doubtful, one sentence each; ``[]`` for a quiet run.

    Args:
        cores: the machine's cores.
        threads: the torch threads the run used.
        load_before: the 1-minute load average before the run (other processes only). Default: ``None``
        other_cores: cores other processes kept busy during the run (:class:`CpuMeter`). Default: ``None``
        spreads: ``(what, spread)`` for each measurement: flagged above :data:`SPREAD_LIMIT`. Default: none
        copy_spreads: ``(shape, spread)`` of the copy timed at the start of each round at each
            shape, flagged above :data:`SPREAD_LIMIT`: the same 64 MiB copy at every shape, so
            its rounds differ only where the machine's memory bandwidth changed. Default: none
        faults: ``(what, page faults per call in each round)`` for each measurement, flagged
            as :func:`fault_changes` says. Default: none
        reuse_memory: the run already reuses memory (``--reuse-memory``): the warning about
            page faults does not suggest it. Default: ``False``
    """
    warnings = []
    room = cores - threads + LOAD_MARGIN
    hint = " Numbers from a loaded machine are not results: run again when it is quiet" + (
        ", or with --threads 1 (torch's threads spin-wait for cores other processes hold)." if threads > 1 else "."
    )
    if load_before is not None and load_before > room:
        warnings.append(f"the load average was {load_before:.2f} before the run, with {threads} torch threads "
                        f"on {cores} cores: other processes wanted the cores.{hint}")
    if other_cores is not None and other_cores > room:
        warnings.append(f"other processes kept {other_cores:.2f} cores busy during the run, with {threads} torch "
                        f"threads on {cores} cores.{hint}")
    changed = fault_changes(faults)
    noisy = [(what, s) for what, s in spreads if s > SPREAD_LIMIT]
    if noisy:
        worst = max(noisy, key=lambda p: p[1])
        in_memory = len({what for what, _ in noisy} & set(changed))
        cause = (f"the machine was disturbed, or, for {in_memory} of them, the memory they were given changed "
                 f"(see the page faults below)" if in_memory else "the machine was disturbed")
        warnings.append(f"{len(noisy)} of {len(spreads)} measurements differ by more than {SPREAD_LIMIT:.0%} "
                        f"between rounds (the most: {worst[0]}, {worst[1]:.0%}): {cause}, "
                        f"and their medians are uncertain by as much.")
    unsteady = [(what, s) for what, s in copy_spreads if s > SPREAD_LIMIT]
    if unsteady:
        worst = max(unsteady, key=lambda p: p[1])
        warnings.append(f"the copy timed at the start of each round differed by more than {SPREAD_LIMIT:.0%} "
                        f"between rounds at {len(unsteady)} of {len(copy_spreads)} shapes (the most: "
                        f"{worst[1]:.0%}, at {worst[0]}): the memory bandwidth itself changed during the run, "
                        f"whatever this machine's load (on a virtual machine, other machines on the same host "
                        f"share it). Read the ratios round by round, each kernel against nn.BatchNorm1d in "
                        f"the same round.")
    if changed:
        what, rounds = max(((w, f) for w, f in faults if w in changed), key=lambda p: max(p[1]) - min(p[1]))
        remedy = ("" if reuse_memory else " --reuse-memory keeps what the main thread frees for the next call, "
                  "which takes most of the change away.")
        warnings.append(f"{len(changed)} of {len(faults)} measurements took a different number of page faults per "
                        f"call from round to round (the most: {what}, {min(rounds):.0f} to {max(rounds):.0f}): "
                        f"the C library gave them fresh memory in some rounds and memory it had kept in others, so "
                        f"their rounds time two different things.{remedy}")
    return warnings


def fault_changes(faults: Sequence[tuple[str, Sequence[float]]]) -> list[str]:
    """The measurements whose rounds took different numbers of page faults per call, of ``(what, rounds)``.

    Flagged where the fewest and the most differ by more than :data:`SPREAD_LIMIT` of the most
    and by more than :data:`FAULT_FLOOR`: fresh memory in some rounds, kept memory in others.
    """
    return [what for what, f in faults if f and max(f) - min(f) > max(FAULT_FLOOR, SPREAD_LIMIT * max(f))]


def _compile_in_process() -> None:
    """No pool of background compile workers: they would compete for the cores being timed."""
    # TorchInductor takes a second to import and creates its folder in /tmp: only a run pays for it.
    import torch._inductor.config as inductor_config  # noqa: PLC0415 - heavy, with a side effect

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
    copies: bool = False,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Time every kernel at every shape and mode, ``rounds`` times in turn.

    Each round's measurement is the median of ``Timer.blocked_autorange``'s blocks; the
    result is the median over the rounds, with their spread (:func:`spread`): the typical
    time, and how much the machine disturbed it. The fastest round alone would hide the
    disturbance and flatter every kernel. With ``copies``, each round at each shape also
    times a copy (as :func:`copy_bandwidth`), for the rooflines.

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
        copies: time a copy in each round, for ``roofline`` and ``round_rooflines``.
            Default: ``False`` (no roofline)
        seed: for the inputs. Default: 0
        progress: called with a line of text as the run goes. Default: ``None``
    """
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    _compile_in_process()
    results: list[Result] = []
    say = progress or (lambda line: None)
    copy = _copy_timer(64 * 2**20, threads, device) if copies else None
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
        faulted: dict[tuple[str, str], list[float | None]] = {}
        copy_rounds: list[float] = []
        for round_ in range(rounds):
            if copy:
                copy_rounds.append(copy(min(min_run_time, 0.1)))
            for mode in modes:
                for k in kernels:
                    if k.name not in calls:
                        continue
                    counted = _Counted(calls[k.name][mode])
                    timer = _timer(counted, threads, label=mode, sub_label=str(shape), description=k.name)
                    before = minor_faults() if device == "cpu" else None
                    try:
                        m = timer.blocked_autorange(min_run_time=min_run_time)
                    except Exception as e:
                        errors[k.name] = f"{type(e).__name__}: {e}"
                        calls.pop(k.name)
                        continue
                    after = minor_faults() if before is not None else None
                    measured.setdefault((k.name, mode), []).append(m)
                    faulted.setdefault((k.name, mode), []).append(
                        None if before is None or after is None else (after - before) / counted.calls)
            say(f"{shape}: round {round_ + 1}/{rounds} done")
        for mode in modes:
            # the reference's rounds, for the ratios: none if it failed, and then no ratios
            reference_rounds = [] if kernels[0].name in errors else [
                m.median for m in measured.get((kernels[0].name, mode), [])]
            for k in kernels:
                r = Result(k.name, shape, mode)
                if (k.name, mode) in measured and k.name not in errors:
                    rounds_measured = measured[(k.name, mode)]
                    r.round_seconds = [m.median for m in rounds_measured]
                    r.seconds = statistics.median(r.round_seconds)
                    r.spread = spread(r.round_seconds)
                    r.iqr = sorted(rounds_measured, key=lambda m: m.median)[len(rounds_measured) // 2].iqr
                    r.runs = sum(len(m.times) * m.number_per_run for m in rounds_measured)
                    faults = faulted[(k.name, mode)]
                    if None not in faults:
                        r.round_page_faults = faults
                        r.page_faults = statistics.median(faults)
                    moved = bytes_moved(shape, mode, x.element_size())
                    r.bandwidth = moved / r.seconds
                    if copies:
                        r.roofline = r.bandwidth / statistics.median(copy_rounds)
                        r.round_copy_bandwidth = copy_rounds
                        r.round_rooflines = [moved / t / bw for t, bw in zip(r.round_seconds, copy_rounds, strict=True)]
                    if reference_rounds:
                        r.ratio = r.seconds / statistics.median(reference_rounds)
                        r.round_ratios = [t / t_ref for t, t_ref in zip(r.round_seconds, reference_rounds, strict=True)]
                else:
                    r.error = errors.get(k.name, "not measured")
                results.append(r)
        del calls, x, dy
    return results



# --------------------------------------------------------------------------------------------
# The machine.
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


def _page_size() -> int | None:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE")
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
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "memory": memory.mode(),
        "page_size": _page_size(),
        "load_average_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": _git_commit(),
    }
    with contextlib.suppress(Exception):
        info["triton"] = version("triton")
    with contextlib.suppress(Exception):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    return info
