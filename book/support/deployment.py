"""Inference time of the digits network with its batch norms folded, against the unfolded network.

Folding (:func:`bnlib.torch.fold_batch_norms`) turns the course's 784-300-100-10 network
with three batch-norm layers into three linear layers and two ReLUs that compute the same
function in evaluation mode. This benchmark times both, on the same inputs, in the same
process, in alternating rounds (the order flips every round), so that a machine busy with
something else slows both alike; it reports the ratio of their times (folded / unfolded,
below 1 is faster), its median and spread over the rounds, and the machine's load before
and after, since absolute times on a shared machine say little.

From the command line (prints a table)::

    cd book && ../.venv/bin/python -m support.deployment [--rounds 15] [--batch 1 --batch 1000]

The chapter "Batch norm at scale and in deployment" runs :func:`benchmark` and shows its
output.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

import bnlib.torch as bnt
from support.experiments import digits_mlp

__all__ = ["Timing", "time_side_by_side", "benchmark", "format_table", "main"]

#: Each measurement repeats the call for about this long, so that the clock's resolution and
#: the loop's overhead do not count.
TARGET_SECONDS = 0.01


@dataclass(frozen=True)
class Timing:
    """Folded against unfolded at one batch size: per-call times and their ratio over the rounds."""

    batch: int
    rounds: int
    calls: int  #: calls per measurement
    unfolded_ms: float  #: median per-call time
    folded_ms: float
    ratio: float  #: median over the rounds of folded / unfolded, measured side by side
    ratio_low: float  #: the rounds' first quartile of the ratio
    ratio_high: float  #: third quartile
    load_before: float  #: 1-minute load average
    load_after: float
    cores: int
    same_predictions: bool

    @property
    def busy(self) -> bool:
        """The machine ran more than one job per core while timing: absolute times are inflated."""
        return max(self.load_before, self.load_after) > self.cores


def _seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def time_side_by_side(unfolded: nn.Module, folded: nn.Module, x: torch.Tensor, rounds: int = 15) -> Timing:
    """Time ``unfolded(x)`` and ``folded(x)`` (inference mode) in ``rounds`` alternating rounds."""
    if unfolded.training or folded.training:
        raise ValueError("time the models in evaluation mode: call .eval() on both")
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        same = torch.equal(unfolded(x).argmax(1), folded(x).argmax(1))
        a, b = (lambda: unfolded(x)), (lambda: folded(x))
        _seconds_per_call(a, 3), _seconds_per_call(b, 3)  # warm up
        calls = max(1, round(TARGET_SECONDS / max(_seconds_per_call(a, 5), 1e-7)))
        times_a, times_b = [], []
        for r in range(rounds):
            if r % 2:
                times_b.append(_seconds_per_call(b, calls))
                times_a.append(_seconds_per_call(a, calls))
            else:
                times_a.append(_seconds_per_call(a, calls))
                times_b.append(_seconds_per_call(b, calls))
    ratios = [tb / ta for ta, tb in zip(times_a, times_b, strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if rounds >= 2 else (ratios[0],) * 3
    return Timing(
        batch=len(x), rounds=rounds, calls=calls,
        unfolded_ms=1e3 * statistics.median(times_a), folded_ms=1e3 * statistics.median(times_b),
        ratio=statistics.median(ratios), ratio_low=q1, ratio_high=q3,
        load_before=load_before, load_after=os.getloadavg()[0], cores=os.cpu_count() or 1,
        same_predictions=bool(same),
    )


def benchmark(model: nn.Module | None = None, batches: Sequence[int] = (1, 1000), rounds: int = 15,
              threads: int = 1) -> list[Timing]:
    """The digits network (``model``, or a fresh one with running statistics of random pixels),
    unfolded against folded, at each batch size, with ``threads`` torch threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if model is None:
            model = digits_mlp()
            with torch.no_grad():
                model(torch.rand(256, 784) * 255)  # running statistics away from 0 and 1
        model = model.eval()
        folded = bnt.fold_batch_norms(model)
        x = torch.rand(max(batches), 784, generator=torch.Generator().manual_seed(0)) * 255
        return [time_side_by_side(model, folded, x[:b], rounds) for b in batches]
    finally:
        torch.set_num_threads(before)


def format_table(timings: Sequence[Timing]) -> str:
    """The timings as a small text table, with a note when the machine was busy."""
    lines = [f"{'batch':>6}  {'unfolded':>10}  {'folded':>10}  {'folded/unfolded':>15}  {'quartiles':>13}  "
             f"{'same predictions':>16}"]
    for t in timings:
        lines.append(f"{t.batch:>6}  {t.unfolded_ms:>8.3f}ms  {t.folded_ms:>8.3f}ms  {t.ratio:>15.2f}  "
                     f"{t.ratio_low:>6.2f}-{t.ratio_high:<6.2f}  {'yes' if t.same_predictions else 'NO':>16}")
    loads = [x for t in timings for x in (t.load_before, t.load_after)]
    cores = timings[0].cores if timings else os.cpu_count()
    lines.append(f"median of {timings[0].rounds if timings else 0} alternating rounds, one thread; "
                 f"load {min(loads, default=0):.1f} to {max(loads, default=0):.1f} on {cores} cores")
    if any(t.busy for t in timings):
        lines.append("the machine was busy (load above its core count): the times are inflated; "
                     "the ratio, measured side by side, less so")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Inference time of the digits network, folded vs unfolded.")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, action="append", help="batch sizes (default: 1 and 1000)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    timings = benchmark(batches=args.batch or (1, 1000), rounds=args.rounds, threads=args.threads)
    print(format_table(timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


