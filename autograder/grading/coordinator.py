"""``python -m autograder grade``: a class's submissions in, grades, feedback and a report out.

The coordinating process (this module) finds the submissions, makes the output folder an
nbgrader course directory (:mod:`autograder.grading.store`), hands one task per notebook to a pool
of workers (:func:`autograder.grading.worker.grade_notebook`: local processes, or a Dask cluster with
``--scheduler``: the same task either way), and alone writes what comes back: nbgrader's
grades through its ``SaveAutoGrades`` preprocessor, the autograded notebook, the feedback page,
then the row of ``bngrade_result`` that marks the submission done. That order makes a run
resumable: kill it (even ``kill -9``) and run the same command again, and it grades only the
submissions without a row; a row is replaced, never added twice, and nbgrader's grades are
keyed by student and cell, so nothing is lost or counted twice. A finished run, rerun, grades
nothing unless ``--force`` (or unless a notebook, or the assignment's source, changed since).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sqlite3
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from autograder.course.spec import kind_of
from autograder.grading import store as course_mod
from autograder.grading.store import Course, Result, write_atomic
from autograder.grading.submissions import Submission, collect
from autograder.notebook import title
from autograder.sandbox import Limits, SandboxError


class GradeError(RuntimeError):
    """The run cannot start (e.g. the Dask scheduler cannot be reached); the message says why."""


@dataclass
class GradeOptions:
    """What `grade` was asked to do (the CLI's arguments)."""

    submissions: str
    out: str
    assignment: str | None = None
    workers: int | None = None
    scheduler: str | None = None
    timeout: float = 30.0
    notebook_timeout: float | None = None
    memory_mb: int = 3072
    force: bool = False
    id_pattern: str | None = None
    student: str | None = None
    progress: bool = True
    dask_local_directory: str | None = None
    speed: bool = False
    speed_shape: tuple[int, int] | None = None

    def limits(self) -> Limits:
        return Limits(cell_timeout=float(self.timeout),
                      notebook_timeout=float(self.notebook_timeout or 10 * self.timeout),
                      memory=int(self.memory_mb) * 2**20)


@dataclass
class Summary:
    """What a run did: counts per status, the notebooks graded, their rate."""

    graded_now: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    results: list[Result] = field(default_factory=list)

    @property
    def notebooks_run(self) -> int:
        """Submissions that were notebooks to run (not missing)."""
        return sum(1 for r in self.results if r.status != "missing")

    @property
    def per_minute(self) -> float:
        return 60.0 * self.notebooks_run / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- the run
def grade(options: GradeOptions, console=None) -> Summary:
    """Grade `options.submissions` into `options.out` (see the module docstring)."""
    from rich.console import Console

    console = console or Console(stderr=True)
    started = time.monotonic()
    course = Course(options.out)
    assignments = course_mod.known_assignments()
    subs = collect(options.submissions, assignments, options.assignment, options.id_pattern, options.student)
    used = sorted({s.assignment for s in subs})
    if not options.scheduler and any(s.status is None for s in subs):
        from autograder.sandbox import preflight

        preflight()  # bubblewrap missing, user namespaces off...: say so once, before anything
    course.prepare(used)
    subs += _missing_students(course, subs, used)
    sources = {a: course.meta(f"source:{a}") or "" for a in used}
    done = course.results()
    timed = course.speeds() if options.speed else {}
    todo = [s for s in subs if not _is_done(done.get((s.student, s.assignment)), s, sources)
            or (options.force and s.status != "missing") or _needs_speed(options, s, timed)]
    summary = Summary(skipped=len(subs) - len(todo))
    if not todo:
        console.print(f"Nothing to grade: all {len(subs)} submissions in {options.out} are graded "
                      "(pass --force to grade them again).")
        if not (course.root / "grades.csv").exists():
            _reports(course)
        summary.seconds = time.monotonic() - started
        return summary
    parts = {a: _parts(course, a) for a in used}
    writer = _Writer(course, parts, sources)
    direct = [s for s in todo if s.status in ("missing", "malformed")]
    jobs = [s for s in todo if s.status is None]
    jobs.sort(key=lambda s: (kind_of(s.assignment) != "torch", s.assignment, s.student))
    with _ProgressView(console, len(todo), options.progress) as view:
        for sub in direct:
            answer = _ungraded_answer(sub, parts[sub.assignment])
            summary.results.append(writer.store(sub, answer))
            view.advance(answer["status"])
        if jobs:
            snapshot = _snapshot(course)
            orders = {a: _cell_order(course, a) for a in used}
            config = _worker_config(course)
            base = {"gradebook": snapshot, "limits": _limits_dict(options.limits()), "nbgrader_config": config,
                    "speed": bool(options.speed), "speed_shape": options.speed_shape}
            payloads = {}
            for sub in jobs:
                payloads[(sub.student, sub.assignment)] = (sub, {
                    **base, "student_id": sub.student, "assignment": sub.assignment, "notebook": sub.data,
                    "seed": course.seed(sub.student, sub.assignment), "kind": kind_of(sub.assignment),
                    "parts": parts[sub.assignment], "cell_order": orders[sub.assignment]})
            kinds = sorted({kind_of(s.assignment) for s in jobs})
            runner = (_DaskRunner(options) if options.scheduler
                      else _LocalRunner(options, course, kinds, base["limits"]))
            with runner:
                for key, answer, error in runner.run(payloads):
                    sub = payloads[key][0]
                    if error:
                        summary.errors.append(f"{sub.student}/{sub.assignment}: {error}")
                        view.advance("error")
                        continue
                    summary.results.append(writer.store(sub, answer))
                    view.advance(answer["status"])
    summary.graded_now = len(summary.results)
    for r in summary.results:
        summary.statuses[r.status] = summary.statuses.get(r.status, 0) + 1
    _reports(course)
    summary.seconds = time.monotonic() - started
    return summary


def _is_done(row: Result | None, sub: Submission, sources: dict) -> bool:
    """Whether `sub` already has its result (`row`), so that this run leaves it alone."""
    if row is None:
        return False
    if sub.status == "missing":
        # nothing handed in this time: a grade from an earlier run (another zip, a late
        # notebook graded alone) stays; only a student never graded gets a 'missing' row
        return True
    if row.source_sha256 != sources.get(sub.assignment, ""):
        return False
    return row.sha256 == sub.sha256


def _needs_speed(options: GradeOptions, sub: Submission, timed: dict) -> bool:
    """``--speed`` asked for, and this bn-torch notebook has no speed entry yet: grade it again."""
    return (options.speed and sub.status is None and kind_of(sub.assignment) == "torch"
            and (sub.student, sub.assignment) not in timed)


def _missing_students(course: Course, subs: list[Submission], assignments: list[str]) -> list[Submission]:
    """Students the gradebook knows (from earlier runs) with nothing handed in this time."""
    present = {(s.student, s.assignment) for s in subs}
    try:
        with sqlite3.connect(course.db_path) as db:
            students = [r[0] for r in db.execute("SELECT id FROM student")]
    except sqlite3.Error:
        return []
    return [Submission(s, a, status="missing", problem=f"no submission for {a}")
            for s in sorted(students) for a in assignments if (s, a) not in present]


def _parts(course: Course, assignment: str) -> dict[str, tuple[str, float]]:
    """The graded parts of an assignment: grade_id -> (its docstring's first line, points)."""
    from nbgrader.api import Gradebook

    with Gradebook(course.db_url) as gb:
        nb = gb.find_notebook(assignment, assignment)
        sources = {c.name: c.source for c in nb.source_cells}
        return {c.name: (title(sources.get(c.name, "")), float(c.max_score)) for c in nb.grade_cells}


def _cell_order(course: Course, assignment: str) -> list[str]:
    """The grade ids of the released notebook, in order (where a deleted graded cell goes back)."""
    import nbformat

    nb = nbformat.read(course.root / "release" / assignment / f"{assignment}.ipynb", as_version=4)
    return [c.metadata.nbgrader["grade_id"] for c in nb.cells if "grade_id" in c.metadata.get("nbgrader", {})]


def _snapshot(course: Course) -> bytes:
    """The gradebook as bytes (the workers' read-only copy of the assignments' cells)."""
    src = sqlite3.connect(course.db_path)
    dst = sqlite3.connect(":memory:")
    try:
        src.backup(dst)
        return dst.serialize()
    finally:
        src.close()
        dst.close()


def _worker_config(course: Course) -> dict:
    """The course's nbgrader settings the workers need (everything but the folders)."""
    config = course.nbgrader_config()
    return {k: dict(v) for k, v in config.items() if k != "CourseDirectory"}


def _limits_dict(limits: Limits) -> dict:
    import dataclasses

    return dataclasses.asdict(limits)


def _ungraded_answer(sub: Submission, parts: dict) -> dict:
    from autograder.output import feedback

    answer = {"student_id": sub.student, "assignment": sub.assignment, "status": sub.status,
              "reason": sub.problem or "", "mistakes": [], "notebook": None, "score": 0.0,
              "parts": {gid: {"title": t, "passed": False, "message": "", "mistake": None, "score": 0.0,
                              "max_score": p} for gid, (t, p) in parts.items()},
              "max_score": float(sum(p for _, p in parts.values())), "seconds": 0.0}
    answer["feedback"] = feedback.render(answer, None)
    return answer


# ---------------------------------------------------------------- writing what comes back
class _Writer:
    """The coordinator's writes, in the order that makes a run resumable."""

    def __init__(self, course: Course, parts: dict, sources: dict) -> None:
        self.course, self.parts, self.sources = course, parts, sources
        self.config = course.nbgrader_config()

    def store(self, sub: Submission, answer: dict) -> Result:
        import nbformat
        from nbgrader.api import Gradebook, MissingEntry
        from nbgrader.preprocessors import SaveAutoGrades

        c = self.course
        student, assignment = sub.student, sub.assignment
        if sub.data is not None:
            write_atomic(c.submitted(student, assignment), sub.data)
            if sub.timestamp:
                write_atomic(c.submitted(student, assignment).with_name("timestamp.txt"),
                             sub.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f %Z"))
        with Gradebook(c.db_url) as gb:  # separate sessions, as nbgrader's Autograde does
            gb.update_or_create_student(student)
        if answer["status"] != "missing":
            kwargs = {"timestamp": sub.timestamp.replace(tzinfo=None)} if sub.timestamp else {}
            with Gradebook(c.db_url) as gb:
                gb.update_or_create_submission(assignment, student, **kwargs)
        if answer.get("notebook"):
            nb = nbformat.reads(answer["notebook"], as_version=4)
            resources = {"nbgrader": {"db_url": c.db_url, "assignment": assignment, "notebook": assignment,
                                      "student": student}}
            SaveAutoGrades(config=self.config).preprocess(nb, resources)
            write_atomic(c.autograded(student, assignment), answer["notebook"])
        elif answer["status"] != "missing":
            with Gradebook(c.db_url) as gb:  # nothing ran: every part scores 0, as nbgrader does
                try:
                    nbs = gb.find_submission_notebook(assignment, assignment, student)
                    for grade in nbs.grades:
                        grade.auto_score = 0
                        grade.needs_manual_grade = False
                    gb.db.commit()
                except MissingEntry:
                    pass
        write_atomic(c.feedback(student, assignment), answer["feedback"])
        result = Result(student, assignment, answer["status"], answer.get("reason", ""),
                        float(answer.get("score", 0.0)), float(answer.get("max_score", 0.0)),
                        answer.get("parts", {}), answer.get("mistakes", []), sub.sha256,
                        self.sources.get(assignment, ""), sub.origin, "", float(answer.get("seconds", 0.0)))
        c.save_result(result)
        if answer.get("speed") is not None:
            c.save_speed(student, assignment, answer["speed"], sub.sha256)
        return result


def _reports(course: Course) -> None:
    from autograder.output import report

    report.write_all(course)


# ---------------------------------------------------------------- where the tasks run
class _LocalRunner:
    """A pool of local worker processes (one sandbox slot each)."""

    def __init__(self, options: GradeOptions, course: Course, kinds: list[str], limits: dict) -> None:
        self.workers = options.workers or len(os.sched_getaffinity(0))
        self.scratch = str(course.root / ".bngrade" / "work")
        self.kinds, self.limits = kinds, limits
        self.pool = None

    def __enter__(self):
        from autograder.grading import worker

        os.makedirs(self.scratch, exist_ok=True)
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=worker.init_process, initargs=(self.scratch, self.kinds, self.limits))
        return self

    def run(self, payloads: dict):
        from autograder.grading import worker

        futures = {self.pool.submit(worker.grade_notebook, job): key for key, (_, job) in payloads.items()}
        for future in concurrent.futures.as_completed(futures):
            key = futures[future]
            try:
                yield key, future.result(), None
            except SandboxError as exc:
                yield key, None, str(exc)
            except Exception as exc:  # noqa: BLE001 - a grader bug on one notebook stops only that one
                yield key, None, "".join(traceback.format_exception_only(type(exc), exc)).strip()

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        try:
            import shutil

            shutil.rmtree(self.scratch)
            os.rmdir(os.path.dirname(self.scratch))
        except OSError:
            pass


class _DaskRunner:
    """The same tasks on an existing Dask cluster (``--scheduler tcp://host:8786``)."""

    def __init__(self, options: GradeOptions) -> None:
        self.address = options.scheduler
        self.client = None

    def __enter__(self):
        from distributed import Client

        try:
            self.client = Client(self.address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise GradeError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from None
        return self

    def run(self, payloads: dict):
        from distributed import as_completed

        from autograder.grading import worker

        snapshot = next(iter(payloads.values()))[1]["gradebook"]
        shared = self.client.scatter(snapshot, broadcast=True)
        futures = {}
        for key, (_, job) in payloads.items():
            job = {**job, "gradebook": shared}
            futures[self.client.submit(worker.grade_notebook, job, pure=False,
                                       key=f"bngrade-{key[1]}-{key[0]}-{time.time_ns()}")] = key
        for future in as_completed(list(futures)):
            key = futures[future]
            try:
                yield key, future.result(), None
            except SandboxError as exc:
                yield key, None, str(exc)
            except Exception as exc:  # noqa: BLE001
                yield key, None, "".join(traceback.format_exception_only(type(exc), exc)).strip()

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            from autograder.grading import worker

            try:
                self.client.run(worker.shutdown)
            except Exception:  # noqa: BLE001 - a worker that is gone has nothing to release
                pass
            self.client.close()


# ---------------------------------------------------------------- progress
class _ProgressView:
    """A rich progress bar with the counts per status and the ETA (plain lines without a terminal)."""

    def __init__(self, console, total: int, enabled: bool) -> None:
        self.console, self.total, self.enabled = console, total, enabled
        self.counts: dict[str, int] = {}
        self.done = 0
        self.progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("Grading"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
                                     transient=False)
            self.progress.__enter__()
            self.task = self.progress.add_task("grading", total=self.total, counts="")
        self.started = time.monotonic()
        return self

    def advance(self, status: str) -> None:
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        text = " · ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        if self.progress is not None:
            self.progress.update(self.task, advance=1, counts=text)
            if not self.console.is_terminal and (self.done == self.total or self.done % max(1, self.total // 10) == 0):
                elapsed = time.monotonic() - self.started
                eta = elapsed / self.done * (self.total - self.done)
                self.console.print(f"graded {self.done}/{self.total} ({text}), ETA {eta:.0f} s")

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


def print_summary(summary: Summary, course_dir: str, console) -> None:
    """The table printed at the end of `grade`."""
    from rich.table import Table

    rows: dict[str, dict[str, int]] = {}
    scores: dict[str, list[float]] = {}
    for r in summary.results:
        rows.setdefault(r.assignment, {})
        rows[r.assignment][r.status] = rows[r.assignment].get(r.status, 0) + 1
        if r.status != "missing":
            scores.setdefault(r.assignment, []).append(r.score / r.max_score if r.max_score else 0.0)
    table = Table(title=f"Graded {summary.graded_now} submissions ({summary.notebooks_run} notebooks) in "
                        f"{summary.seconds:.1f} s: {summary.per_minute:.1f} notebooks/minute")
    table.add_column("assignment")
    for status in course_mod.STATUSES:
        table.add_column(status, justify="right")
    table.add_column("mean score (handed in)", justify="right")
    for assignment in sorted(rows):
        got = scores.get(assignment, [])
        mean = f"{sum(got) / len(got):.0%}" if got else "-"
        table.add_row(assignment, *[str(rows[assignment].get(s, 0)) for s in course_mod.STATUSES], mean)
    console.print(table)
    if summary.skipped:
        console.print(f"{summary.skipped} submissions were already graded (unchanged): skipped; --force grades them again.")
    for error in summary.errors:
        console.print(f"[red]grader error[/red] {error}")
    if summary.errors:
        console.print(f"[red]{len(summary.errors)} submissions were not graded because of grader errors; "
                      "run the same command again to retry them.[/red]")
    root = Path(course_dir)
    console.print(f"Grades: {root / 'grades.csv'}\nReport: {root / 'report.html'}\nFeedback: {root / 'feedback'}/")
