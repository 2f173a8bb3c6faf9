"""What a sandboxed run gives back: a RunResult, or SandboxError when the grader's own machinery failed."""

from __future__ import annotations

from dataclasses import dataclass, field

from autograder.inside.protocol import CellEnd

__all__ = ["SandboxError", "Killed", "RunResult"]


class SandboxError(RuntimeError):
    """The grader's own machinery failed (not the student's notebook): nothing is graded."""


class Killed:
    """Why the grader stopped a run early (:attr:`RunResult.killed_for`)."""

    CELL_TIMEOUT = "cell-timeout"          # a cell did not stop when interrupted
    NOTEBOOK_TIMEOUT = "notebook-timeout"  # the notebook ran past its time limit
    OUTPUT = "output"                      # more bytes than Limits.protocol
    PROTOCOL = "protocol"                  # one message longer than Limits.message


@dataclass
class RunResult:
    """What came back from one sandboxed run (all of it untrusted data from the notebook).

    Attributes:
        cells: the executor's report of each cell that ended, by the cell's index.
        records: the probe's records, by file name in the channel folder.
        started: the executor said it was ready (before any student code ran).
        finished: it said every cell ran.
        current_cell: the cell that was running when the run ended early.
        killed_for: why the grader stopped the run (a :class:`Killed` value), or None.
        exit_code, exit_signal: how the notebook's process ended.
        oom_killed: the slot's memory cgroup killed a process.
        pids_limited: the slot's pids cgroup refused a fork.
        problems: protocol trouble and oversized records, as sentences for the reason.
        stderr: bubblewrap's (or the warm runner's) own messages; students cannot write there.
        wall: seconds the run took.
    """

    cells: dict[int, CellEnd] = field(default_factory=dict)
    records: dict[str, bytes] = field(default_factory=dict)
    started: bool = False
    finished: bool = False
    current_cell: int | None = None
    killed_for: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    oom_killed: bool = False
    pids_limited: bool = False
    problems: list[str] = field(default_factory=list)
    stderr: str = ""
    wall: float = 0.0

    def events(self) -> list[tuple[int, str]]:
        """(cell index, event) for every event of every cell, in cell order."""
        return [(i, e) for i, c in sorted(self.cells.items()) for e in c.events]
