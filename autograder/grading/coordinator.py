"""``python -m autograder grade``: a class's submissions in, grades, feedback and a report out.

The coordinating process (this module) finds the submissions
(:mod:`autograder.grading.submissions`), makes the output folder an nbgrader course directory
(:mod:`autograder.grading.store`), chooses what to grade (:func:`to_grade`) and in what order
(:func:`grading_order`), hands one :class:`~autograder.grading.jobs.Job` per notebook to a pool
of workers (:func:`autograder.grading.worker.grade_notebook`: local processes, or a Dask cluster
with ``--scheduler``, :mod:`autograder.grading.runners`: the same task either way), and alone
writes what comes back: nbgrader's
grades through its ``SaveAutoGrades`` preprocessor, the autograded notebook, the feedback page,
then the row of ``bngrade_result`` that marks the submission done. That order makes a run
resumable: kill it (even ``kill -9``) and run the same command again, and it grades only the
submissions without a row; a row is replaced, never added twice, and nbgrader's grades are
keyed by student and cell, so nothing is lost or counted twice. A finished run, rerun, grades
nothing unless ``--force`` (or unless a notebook, or the assignment's source, changed since).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import SaveAutoGrades
from rich.console import Console

from autograder.course.spec import kind_of
from autograder.grading.jobs import Answer, Job, Part, SpeedRequest, Status
from autograder.grading.progress import ProgressView, Summary, print_summary
from autograder.grading.runners import DaskRunner, GradeError, LocalRunner
from autograder.grading.store import GradingFolder, Result, known_assignments, write_atomic
from autograder.grading.submissions import Submission, collect
from autograder.grading.worker import ungraded_answer
from autograder.notebook import title
from autograder.output import report
from autograder.sandbox import Limits, preflight

__all__ = ["GradeOptions", "GradeError", "Summary", "grade", "print_summary", "to_grade", "is_done",
           "needs_speed", "missing_students", "grading_order"]


@dataclass
class GradeOptions:
    """What `grade` was asked to do (the CLI's arguments; see ``python -m autograder grade --help``)."""

    submissions: str
    out: str
    assignment: str | None = None
    workers: int | None = None
    scheduler: str | None = None
    timeout: float = Limits.cell_timeout
    notebook_timeout: float | None = None
    memory_mb: int = Limits.memory // 2**20
    force: bool = False
    id_pattern: str | None = None
    student: str | None = None
    progress: bool = True
    speed: bool = False
    speed_shape: tuple[int, int] | None = None

    def limits(self) -> Limits:
        return Limits.for_grading(self.timeout, self.memory_mb, self.notebook_timeout)

    def speed_request(self) -> SpeedRequest | None:
        if not self.speed:
            return None
        return SpeedRequest(self.speed_shape) if self.speed_shape else SpeedRequest()


# ---------------------------------------------------------------- what to grade
def is_done(row: Result | None, sub: Submission, sources: Mapping[str, str]) -> bool:
    """Whether `sub` already has its result (`row`), so that this run leaves it alone.

    ``sources``: the fingerprint of each assignment's source (a changed source regrades all).
    """
    if row is None:
        return False
    if sub.status == Status.MISSING:
        # nothing handed in this time: a grade from an earlier run (another zip, a late
        # notebook graded alone) stays; only a student never graded gets a 'missing' row
        return True
    if row.source_sha256 != sources.get(sub.assignment, ""):
        return False
    return row.sha256 == sub.sha256


def needs_speed(sub: Submission, timed: Mapping[tuple[str, str], dict]) -> bool:
    """A bn-torch notebook to run that has no ``--speed`` entry yet (``timed``: the entries so far)."""
    return sub.status is None and kind_of(sub.assignment) == "torch" and (sub.student, sub.assignment) not in timed


def to_grade(subs: list[Submission], done: Mapping[tuple[str, str], Result], sources: Mapping[str, str],
             force: bool = False, timed: Mapping[tuple[str, str], dict] | None = None) -> list[Submission]:
    """The submissions this run grades, from everything found (`subs`) and the results so far (`done`).

    Args:
        subs: the submissions found, with the students missing this time.
        done: the results of earlier runs, by (student, assignment).
        sources: the fingerprint of each assignment's source now.
        force: ``--force``: grade again every notebook (a missing one stays as it was).
        timed: with ``--speed``, the speed entries so far: a bn-torch notebook without one is
            graded again (and timed). Default: None (no ``--speed``).
    """
    return [s for s in subs if not is_done(done.get((s.student, s.assignment)), s, sources)
            or (force and s.status != Status.MISSING) or (timed is not None and needs_speed(s, timed))]


def missing_students(students: list[str], subs: list[Submission], assignments: list[str]) -> list[Submission]:
    """Students the gradebook knows (`students`, from earlier runs) with nothing handed in this time."""
    present = {(s.student, s.assignment) for s in subs}
    return [Submission(s, a, status=Status.MISSING, problem=f"no submission for {a}")
            for s in sorted(students) for a in assignments if (s, a) not in present]


def grading_order(subs: list[Submission]) -> list[Submission]:
    """bn-torch first (its notebooks take longest), then by assignment and student."""
    return sorted(subs, key=lambda s: (kind_of(s.assignment) != "torch", s.assignment, s.student))


# ---------------------------------------------------------------- the run
def grade(options: GradeOptions, console: Console | None = None) -> Summary:
    """Grade `options.submissions` into `options.out` (see the module docstring)."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    folder = GradingFolder(options.out)
    subs = collect(options.submissions, known_assignments(), options.assignment, options.id_pattern, options.student)
    used = sorted({s.assignment for s in subs})
    if not options.scheduler and any(s.status is None for s in subs):
        preflight()  # bubblewrap missing, user namespaces off...: say so once, before anything
    folder.prepare(used)
    subs += missing_students(folder.students(), subs, used)
    sources = {a: folder.meta(f"source:{a}") or "" for a in used}
    todo = to_grade(subs, folder.results(), sources, options.force, folder.speeds() if options.speed else None)
    summary = Summary(skipped=len(subs) - len(todo))
    if not todo:
        console.print(f"Nothing to grade: all {len(subs)} submissions in {options.out} are graded "
                      "(pass --force to grade them again).")
        if not (folder.root / "grades.csv").exists():
            report.write_all(folder)
        summary.seconds = time.monotonic() - started
        return summary
    parts = {a: _parts(folder, a) for a in used}
    writer = _Writer(folder, sources)
    direct = [s for s in todo if s.status in (Status.MISSING, Status.MALFORMED)]
    to_run = grading_order([s for s in todo if s.status is None])
    with ProgressView(console, len(todo), options.progress) as view:
        for sub in direct:
            answer = ungraded_answer(sub.student, sub.assignment, sub.status, sub.problem or "", parts[sub.assignment])
            summary.results.append(writer.store(sub, answer))
            view.advance(answer.status)
        if to_run:
            limits, config, request = options.limits(), _worker_config(folder), options.speed_request()
            orders = {a: _cell_order(folder, a) for a in used}
            jobs = {(s.student, s.assignment): Job(
                        student_id=s.student, assignment=s.assignment, notebook=s.data,
                        seed=folder.seed(s.student, s.assignment), kind=kind_of(s.assignment),
                        parts=parts[s.assignment], cell_order=orders[s.assignment], limits=limits,
                        nbgrader_config=config, speed=request)
                    for s in to_run}
            subs_by_key = {(s.student, s.assignment): s for s in to_run}
            kinds = sorted({job.kind for job in jobs.values()})
            runner = (DaskRunner(options.scheduler) if options.scheduler else
                      LocalRunner(options.workers or len(os.sched_getaffinity(0)),
                                  str(folder.root / ".bngrade" / "work"), kinds, limits))
            with runner:
                for key, answer, error in runner.run(jobs, _snapshot(folder)):
                    sub = subs_by_key[key]
                    if error:
                        summary.errors.append(f"{sub.student}/{sub.assignment}: {error}")
                        view.advance("error")
                        continue
                    summary.results.append(writer.store(sub, answer))
                    view.advance(answer.status)
    summary.graded_now = len(summary.results)
    for r in summary.results:
        summary.statuses[r.status] = summary.statuses.get(r.status, 0) + 1
    report.write_all(folder)
    summary.seconds = time.monotonic() - started
    return summary


def _parts(folder: GradingFolder, assignment: str) -> dict[str, Part]:
    """The graded parts of an assignment, in the gradebook's order."""
    with Gradebook(folder.db_url) as gb:
        nb = gb.find_notebook(assignment, assignment)
        sources = {c.name: c.source for c in nb.source_cells}
        return {c.name: Part(title(sources.get(c.name, "")), float(c.max_score)) for c in nb.grade_cells}


def _cell_order(folder: GradingFolder, assignment: str) -> list[str]:
    """The grade ids of the released notebook, in order (where a deleted graded cell goes back)."""
    nb = nbformat.read(folder.root / "release" / assignment / f"{assignment}.ipynb", as_version=4)
    return [c.metadata.nbgrader["grade_id"] for c in nb.cells if "grade_id" in c.metadata.get("nbgrader", {})]


def _snapshot(folder: GradingFolder) -> bytes:
    """The gradebook as bytes (the workers' read-only copy of the assignments' cells)."""
    src = sqlite3.connect(folder.db_path)
    dst = sqlite3.connect(":memory:")
    try:
        src.backup(dst)
        return dst.serialize()
    finally:
        src.close()
        dst.close()


def _worker_config(folder: GradingFolder) -> dict:
    """The course's nbgrader settings the workers need (everything but the folders)."""
    config = folder.nbgrader_config()
    return {k: dict(v) for k, v in config.items() if k != "CourseDirectory"}


# ---------------------------------------------------------------- writing what comes back
class _Writer:
    """The coordinator's writes, in the order that makes a run resumable."""

    def __init__(self, folder: GradingFolder, sources: Mapping[str, str]) -> None:
        self.folder, self.sources = folder, sources
        self.config = folder.nbgrader_config()

    def store(self, sub: Submission, answer: Answer) -> Result:
        f = self.folder
        student, assignment = sub.student, sub.assignment
        if sub.data is not None:
            write_atomic(f.submitted(student, assignment), sub.data)
            if sub.timestamp:
                write_atomic(f.submitted(student, assignment).with_name("timestamp.txt"),
                             sub.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f %Z"))
        with Gradebook(f.db_url) as gb:  # separate sessions, as nbgrader's Autograde does
            gb.update_or_create_student(student)
        if answer.status != Status.MISSING:
            kwargs = {"timestamp": sub.timestamp.replace(tzinfo=None)} if sub.timestamp else {}
            with Gradebook(f.db_url) as gb:
                gb.update_or_create_submission(assignment, student, **kwargs)
        if answer.notebook:
            nb = nbformat.reads(answer.notebook, as_version=4)
            resources = {"nbgrader": {"db_url": f.db_url, "assignment": assignment, "notebook": assignment,
                                      "student": student}}
            SaveAutoGrades(config=self.config).preprocess(nb, resources)
            write_atomic(f.autograded(student, assignment), answer.notebook)
        elif answer.status != Status.MISSING:
            with Gradebook(f.db_url) as gb:  # nothing ran: every part scores 0, as nbgrader does
                try:
                    nbs = gb.find_submission_notebook(assignment, assignment, student)
                    for grade_ in nbs.grades:
                        grade_.auto_score = 0
                        grade_.needs_manual_grade = False
                    gb.db.commit()
                except MissingEntry:
                    pass
        write_atomic(f.feedback(student, assignment), answer.feedback)
        result = Result.from_answer(answer, sub.sha256, self.sources.get(assignment, ""), sub.origin)
        f.save_result(result)
        if answer.speed is not None:
            f.save_speed(student, assignment, answer.speed, sub.sha256)
        return result
