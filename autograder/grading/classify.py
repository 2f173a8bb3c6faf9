"""How a run ended, in words: the status of a graded notebook and the reason, from its RunResult and Limits.

A pure decision table, read top to bottom; the first row that holds gives the status and
its reason:

======================================  ==========  ===========================================
what happened                           status      reason
======================================  ==========  ===========================================
a cell did not stop when interrupted    timeout     where, the cell time limit
the notebook ran past its time limit    timeout     the notebook time limit, where
it flooded the grader with output       crashed     where, the protocol limit
the memory cgroup killed a process      memory      where, the memory limit
it ended early, by a segfault           crashed     where; the cells after it did not run
it ended early, by another signal       crashed     where, the signal
it ended early, with an exit code       crashed     where (``os._exit``), the exit code
a cell was interrupted at its limit     timeout     the first such cell, the cell time limit
a cell raised MemoryError               memory      the first such cell, the memory limit
a fork was refused                      crashed     the first such cell, the process limit
anything else                           graded
======================================  ==========  ===========================================

Then notes, whatever the status: a cell called ``sys.exit()``, tried a file outside its
folders or the network, or printed more than the output limit. :func:`cell_notes` words what
sanitizing did to the graded cells (a duplicated cell, deleted cells put back); :func:`reason`
joins it all into the CSV's ``reason``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from autograder.grading.jobs import Status
from autograder.inside import protocol
from autograder.inside.executor import DROPPED_MARK
from autograder.sandbox import Killed, Limits, RunResult

__all__ = ["Outcome", "classify", "cell_notes", "reason"]


@dataclass(frozen=True)
class Outcome:
    """The status of a run, why (empty for a clean run), and what else the notebook did."""

    status: str
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def _gib(size: int) -> str:
    return f"{size / 2**30:.3g} GiB"


def _signal_name(number: int) -> str:
    return signal.Signals(number).name if number in signal.Signals._value2member_map_ else f"signal {number}"


def classify(run: RunResult, limits: Limits) -> Outcome:
    """The status and reason of `run`, graded under `limits` (see the module docstring)."""
    where = f"cell {run.current_cell + 1}" if run.current_cell is not None else "the notebook"
    events = run.events()
    first: dict[str, int] = {}  # event -> the first cell (from 1) that had it
    for index, event in events:
        first.setdefault(event, index + 1)
    status, why = Status.GRADED, ""
    if run.killed_for == Killed.CELL_TIMEOUT:
        status, why = Status.TIMEOUT, (f"{where} ran for more than {limits.cell_timeout:g} s and did not stop when "
                                       "interrupted; the grader stopped the notebook there")
    elif run.killed_for == Killed.NOTEBOOK_TIMEOUT:
        status, why = Status.TIMEOUT, (f"the notebook ran for more than {limits.notebook_timeout:g} s "
                                       f"in all; the grader stopped it in {where}")
    elif run.killed_for in (Killed.OUTPUT, Killed.PROTOCOL):
        status, why = Status.CRASHED, (f"{where} flooded the grader with output (more than "
                                       f"{limits.protocol / 2**20:.0f} MB); the grader stopped it")
    elif run.oom_killed:
        status, why = Status.MEMORY, f"{where} used more than {_gib(limits.memory)} of memory and was killed"
    elif not run.finished:
        status = Status.CRASHED
        if run.exit_signal == signal.SIGSEGV:
            why = (f"{where} crashed Python with a segmentation fault (ctypes or a C extension read memory "
                   "it may not); the cells after it did not run")
        elif run.exit_signal:
            why = (f"{where} killed the notebook's process ({_signal_name(run.exit_signal)}); "
                   "the cells after it did not run")
        else:
            why = (f"{where} ended the notebook's process (os._exit or similar, exit code {run.exit_code}); "
                   "the cells after it did not run")
    elif protocol.TIMEOUT in first:
        status, why = Status.TIMEOUT, (f"cell {first[protocol.TIMEOUT]} ran for more than {limits.cell_timeout:g} s "
                                       "and was interrupted (an infinite loop?)")
    elif protocol.MEMORY in first:
        status, why = Status.MEMORY, (f"cell {first[protocol.MEMORY]} ran out of memory (MemoryError: the limit is "
                                      f"{_gib(limits.memory)})")
    elif protocol.PROCESS_LIMIT in first or run.pids_limited:
        cell = first.get(protocol.PROCESS_LIMIT)
        status, why = Status.CRASHED, (f"{f'cell {cell}' if cell else 'the notebook'} tried to start more than "
                                       f"{limits.processes} processes (a fork bomb?) and was refused")
    return Outcome(status, why, _notes(run, limits, first, events))


def _notes(run: RunResult, limits: Limits, first: dict[str, int], events: list[tuple[int, str]]) -> list[str]:
    notes = []
    if protocol.SYSTEM_EXIT in first:
        notes.append(f"cell {first[protocol.SYSTEM_EXIT]} called sys.exit(); the grader went on with the next cell")
    files = [(i, path) for i, e in events if (path := protocol.event_file(e)) is not None]
    if files:
        notes.append(f"cell {files[0][0] + 1} tried to use {files[0][1]}, outside the notebook's own folder; "
                     "the grader's sandbox has no such file and lets a notebook write only in its folder")
    if protocol.NETWORK in first:
        notes.append(f"cell {first[protocol.NETWORK]} tried to use the network; the grader has none")
    truncated = [i + 1 for i, c in run.cells.items() for o in c.outputs
                 if isinstance(o, dict) and DROPPED_MARK in str(o.get("text", ""))]
    if truncated:
        notes.append(f"cell {truncated[0]} printed too much; the grader kept the first {limits.output:,} characters")
    return notes


def cell_notes(before: Sequence[str | None], after: Iterable[str | None], order: Sequence[str]) -> list[str]:
    """What sanitizing did to the graded cells, for the reason.

    Args:
        before: the grade ids of the notebook's graded cells as handed in, in order, with repeats.
        after: those of the sanitized notebook.
        order: the released notebook's grade ids, in order (a restored cell is named in it).
    """
    after = set(after)
    notes = [f"the cell {g!r} appears {before.count(g)} times; the last copy was graded"
             for g in sorted({g for g in before if g is not None and before.count(g) > 1})]
    restored = [g for g in order if g in after and g not in before]
    if restored:
        notes.append(f"graded cells missing from the notebook were put back: {', '.join(restored)}")
    return notes


def reason(outcome: Outcome, notes: Iterable[str] = ()) -> str:
    """The CSV's reason: the status's reason, then `notes` (sanitizing, protocol trouble), then the run's notes."""
    return "; ".join([r for r in [outcome.reason] if r] + list(notes) + outcome.notes)
