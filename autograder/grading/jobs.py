"""The typed contracts between the coordinator and its workers: what a worker is handed, what comes back.

A :class:`Job` is one notebook to grade, built by the coordinator
(:mod:`autograder.grading.coordinator`); an :class:`Answer` is everything grading it gave, built
by the worker (:func:`autograder.grading.worker.grade_notebook`), or by the coordinator for a
submission with nothing to run (:meth:`Answer.ungraded`). Both are plain data that pickle, so
that the same task runs in a local process pool or on a Dask cluster, with no shared file
system: the job carries the notebook's bytes, the answer the judged notebook and the feedback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from autograder.inside.timing import MIN_RUN_TIME, SHAPE
from autograder.sandbox import Limits

__all__ = ["Status", "STATUSES", "Part", "SpeedRequest", "Job", "PartResult", "Answer"]


class Status:
    """How grading one submission may end (the CSV's ``status`` column)."""

    GRADED = "graded"        # the notebook ran to the end
    TIMEOUT = "timeout"      # a cell, or the notebook, ran out of time
    CRASHED = "crashed"      # the notebook's process ended early, or started too many processes
    MEMORY = "memory"        # it ran out of memory
    MALFORMED = "malformed"  # the file is not a usable notebook
    MISSING = "missing"      # no notebook


#: Every status, in the order tables show them.
STATUSES = (Status.GRADED, Status.TIMEOUT, Status.CRASHED, Status.MEMORY, Status.MALFORMED, Status.MISSING)


class Part(NamedTuple):
    """A graded part of an assignment, as the gradebook knows it."""

    title: str     # the first line of the test cell's docstring
    points: float  # its points


@dataclass(frozen=True)
class SpeedRequest:
    """``grade --speed``: time a correct ``BatchNorm1d`` at ``shape`` (see :mod:`autograder.output.speed`).

    Args:
        shape: the batch timed, ``(N, C)``. Default: 16384 x 256.
        min_run_time: seconds each timed statement runs per round. Default: 0.2.
    """

    shape: tuple[int, int] = SHAPE
    min_run_time: float = MIN_RUN_TIME


@dataclass(frozen=True)
class Job:
    """One notebook to grade: what the coordinator hands a worker (with the gradebook's bytes).

    Args:
        student_id: the student.
        assignment: the nbgrader assignment.
        notebook: the notebook's bytes, as handed in (untrusted).
        seed: the seed of the student's challenge inputs (stable per student and folder).
        kind: which packages its sandbox offers, ``"numpy"`` or ``"torch"``.
        parts: the assignment's graded parts by grade id, in the gradebook's order.
        cell_order: the released notebook's grade ids, in order (where a deleted cell goes back).
        limits: what the notebook may use.
        nbgrader_config: the course's nbgrader settings (a traitlets Config as a dict).
        speed: time the notebook's ``BatchNorm1d`` too. Default: None (no).
    """

    student_id: str
    assignment: str
    notebook: bytes
    seed: int
    kind: str
    parts: dict[str, Part]
    cell_order: list[str]
    limits: Limits
    nbgrader_config: dict
    speed: SpeedRequest | None = None


@dataclass
class PartResult:
    """How one graded part went.

    Attributes:
        title: what the part checks.
        passed: the judge's verdict; None where no check ran for the part.
        message: what the student is told (empty when passed).
        mistake: the named mistake (:mod:`autograder.course.mistakes`), if one was recognized.
        cell: the test cell's number in the notebook (from 1), where one was found.
        score, max_score: the points, by nbgrader's rule.
    """

    title: str = ""
    passed: bool | None = None
    message: str = ""
    mistake: str | None = None
    cell: int | None = None
    score: float = 0.0
    max_score: float = 0.0


@dataclass
class Answer:
    """Everything grading one submission gave: what the worker hands back to the coordinator.

    Attributes:
        student_id, assignment: whose, and which.
        status: a :class:`Status`.
        reason: why the status (and what else happened), empty for a clean run.
        parts: every graded part's result, by grade id.
        mistakes: the named mistakes found, in cell order.
        notebook: the judged notebook (nbformat JSON); None when nothing ran.
        feedback: the student's feedback page (HTML).
        score, max_score: the total points.
        seconds: how long grading took.
        speed: the ``--speed`` entry (:mod:`autograder.output.speed`), or None.
    """

    student_id: str
    assignment: str
    status: str = Status.GRADED
    reason: str = ""
    parts: dict[str, PartResult] = field(default_factory=dict)
    mistakes: list[str] = field(default_factory=list)
    notebook: str | None = None
    feedback: str = ""
    score: float = 0.0
    max_score: float = 0.0
    seconds: float = 0.0
    speed: dict | None = None

    @classmethod
    def ungraded(cls, student_id: str, assignment: str, status: str, reason: str,
                 parts: dict[str, Part]) -> Answer:
        """A submission that did not run (missing, malformed): every part scores 0."""
        return cls(student_id, assignment, status, reason,
                   parts={gid: PartResult(title=p.title, passed=False, max_score=float(p.points))
                          for gid, p in parts.items()},
                   max_score=float(sum(p.points for p in parts.values())))
