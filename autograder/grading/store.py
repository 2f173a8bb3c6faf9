"""The grading folder as an nbgrader course directory, and the autograder's own table in its gradebook.

``grade ... --out DIR`` makes DIR a course directory that nbgrader's own tools understand:

```
DIR/
  gradebook.db                  nbgrader's gradebook (+ the table `bngrade_result`, see below)
  nbgrader_config.py            so `cd DIR && nbgrader export` and formgrader find it
  source/<assignment>/          the instructor's notebooks, copied from solutions/
  release/<assignment>/         the student version nbgrader generates from them
  submitted/<student>/<assignment>/<assignment>.ipynb   the notebook as handed in
  autograded/<student>/<assignment>/<assignment>.ipynb  as executed and judged
  feedback/<student>/<assignment>.html                  what to hand back to the student
  grades.csv, report.html       the class's grades and the instructor's report
```

nbgrader's tables hold the scores (a grader's ``manual_score`` in formgrader still overrides
an autograded one, as in nbgrader). What nbgrader has no column for (how each run ended, why,
the judge's messages and named mistakes, a fingerprint of the notebook graded) lives in the
table ``bngrade_result``, one row per student and assignment, written after nbgrader's grades;
it is what makes a run resumable, and what ``report`` reads besides nbgrader's scores. An
ungraded ``--speed`` measurement (:mod:`autograder.output.speed`) goes into ``bngrade_speed``, kept
with the fingerprint of the notebook it timed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from traitlets.config import Config

from autograder.course.spec import COURSE_ID
from autograder.grading.jobs import Answer
from autograder.nbgrader_ext.release import load_config, release, tools_on_path
from autograder.paths import SOLUTIONS

__all__ = ["GradingFolder", "Result", "known_assignments", "tree_sha256", "write_atomic"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bngrade_result (
    student_id TEXT NOT NULL,
    assignment TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    score REAL NOT NULL DEFAULT 0,
    max_score REAL NOT NULL DEFAULT 0,
    parts TEXT NOT NULL DEFAULT '{}',
    mistakes TEXT NOT NULL DEFAULT '[]',
    sha256 TEXT NOT NULL DEFAULT '',
    source_sha256 TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT '',
    graded_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    seconds REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (student_id, assignment)
);
CREATE TABLE IF NOT EXISTS bngrade_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bngrade_speed (
    student_id TEXT NOT NULL,
    assignment TEXT NOT NULL,
    entry TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (student_id, assignment)
);
"""


def known_assignments(solutions: Path = SOLUTIONS) -> list[str]:
    """The assignments the course has: solutions/<name>/<name>.ipynb."""
    if not solutions.is_dir():
        return []
    return sorted(p.name for p in solutions.iterdir() if (p / f"{p.name}.ipynb").is_file())


@dataclass
class Result:
    """One row of `bngrade_result`: how grading one student's assignment ended.

    Attributes:
        student_id, assignment, status, reason, score, max_score, mistakes, seconds: as in
            the worker's :class:`~autograder.grading.jobs.Answer`.
        parts: grade_id -> the part's result as JSON (the fields of
            :class:`~autograder.grading.jobs.PartResult`).
        sha256: the fingerprint of the notebook graded.
        source_sha256: the fingerprint of the assignment's source it was graded against.
        origin: where the notebook came from (a path, or a zip and its entry).
        graded_at: when (the database's clock; set when the row is written).
    """

    student_id: str
    assignment: str
    status: str
    reason: str = ""
    score: float = 0.0
    max_score: float = 0.0
    parts: dict = field(default_factory=dict)
    mistakes: list = field(default_factory=list)
    sha256: str = ""
    source_sha256: str = ""
    origin: str = ""
    graded_at: str = ""
    seconds: float = 0.0

    @classmethod
    def from_answer(cls, answer: Answer, sha256: str, source_sha256: str, origin: str) -> Result:
        """The row for a worker's (or the coordinator's) answer about one notebook."""
        return cls(student_id=answer.student_id, assignment=answer.assignment, status=answer.status,
                   reason=answer.reason, score=float(answer.score), max_score=float(answer.max_score),
                   parts={gid: dataclasses.asdict(p) for gid, p in answer.parts.items()},
                   mistakes=list(answer.mistakes), sha256=sha256, source_sha256=source_sha256, origin=origin,
                   seconds=float(answer.seconds))


#: The columns of `bngrade_result`, in the order of Result's fields; parts and mistakes are JSON.
_COLUMNS = tuple(f.name for f in dataclasses.fields(Result))
_JSON_COLUMNS = ("parts", "mistakes")


class GradingFolder:
    """DIR as an nbgrader course directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, solutions: Path = SOLUTIONS) -> None:
        self.root = Path(root).resolve()
        self.solutions = Path(solutions)
        self.db_path = self.root / "gradebook.db"
        self.db_url = f"sqlite:///{self.db_path}"

    # -- nbgrader's side
    def nbgrader_config(self) -> Config:
        """The traitlets Config nbgrader's classes need for this course directory."""
        c = Config()
        c.merge(load_config())  # the course's nbgrader settings, shared with `release`
        # ... but this folder's layout: nbgrader's defaults, under DIR
        c.CourseDirectory.root = str(self.root)
        c.CourseDirectory.db_url = self.db_url
        for name in ("source", "release", "submitted", "autograded", "feedback"):
            setattr(c.CourseDirectory, f"{name}_directory", name)
        c.CourseDirectory.course_id = c.CourseDirectory.get("course_id", "") or COURSE_ID
        c.GenerateAssignment.create_assignment = True
        c.OverwriteCells.add_missing_cells = True
        return c

    def prepare(self, assignments: list[str], log=None) -> None:
        """Make DIR a course directory that knows `assignments` (generated from solutions/)."""
        tools_on_path()
        self.root.mkdir(parents=True, exist_ok=True)
        with self.db() as db:
            db.executescript(_SCHEMA)
        config_file = self.root / "nbgrader_config.py"
        if not config_file.exists():
            config_file.write_text(
                "# Written by `python -m autograder grade`: makes this folder an nbgrader course\n"
                "# directory, so `nbgrader export --to nbgrader-grades.csv` and formgrader work here.\n"
                "c = get_config()  # noqa: F821\n"
                "c.CourseDirectory.root = __import__('os').path.dirname(__file__)\n"
                f"c.CourseDirectory.course_id = {COURSE_ID!r}\n")
        for assignment in assignments:
            source = self.solutions / assignment
            digest = tree_sha256(source)
            if self.meta(f"source:{assignment}") == digest and (self.root / "release" / assignment).is_dir():
                continue
            target = self.root / "source" / assignment
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
            self._generate(assignment)
            self.set_meta(f"source:{assignment}", digest)

    def _generate(self, assignment: str) -> None:
        """nbgrader's generate_assignment into DIR/release, as ``python -m autograder release`` does."""
        release([assignment], output=self.root / "release", db_url=self.db_url)

    # -- our table
    @contextlib.contextmanager
    def db(self):
        con = sqlite3.connect(self.db_path, timeout=60)
        try:
            yield con
            con.commit()
        finally:
            con.close()

    def meta(self, key: str) -> str | None:
        with self.db() as db:
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM bngrade_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db() as db:
            db.execute("INSERT OR REPLACE INTO bngrade_meta (key, value) VALUES (?, ?)", (key, value))

    def salt(self) -> str:
        """A secret per grading folder: the seeds of the challenge inputs derive from it."""
        value = self.meta("salt")
        if value is None:
            value = secrets.token_hex(16)
            self.set_meta("salt", value)
        return value

    def seed(self, student: str, assignment: str) -> int:
        """The seed of one student's challenge inputs: stable across reruns, unguessable."""
        digest = hashlib.sha256(f"{self.salt()}|{student}|{assignment}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    def results(self) -> dict[tuple[str, str], Result]:
        if not self.db_path.exists():
            return {}
        with self.db() as db:
            db.executescript(_SCHEMA)
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM bngrade_result").fetchall()
        out = {}
        for row in rows:
            values = dict(zip(_COLUMNS, row, strict=True))
            for name in _JSON_COLUMNS:
                values[name] = json.loads(values[name])
            r = Result(**values)
            out[(r.student_id, r.assignment)] = r
        return out

    def save_result(self, r: Result) -> None:
        """Write (or replace) the row of `r`'s student and assignment; ``graded_at`` is now."""
        values = dataclasses.asdict(r)
        for name in _JSON_COLUMNS:
            values[name] = json.dumps(values[name])
        placeholders = ", ".join("CURRENT_TIMESTAMP" if c == "graded_at" else f":{c}" for c in _COLUMNS)
        with self.db() as db:
            db.execute(f"INSERT OR REPLACE INTO bngrade_result ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                       values)

    def students(self) -> list[str]:
        """Every student nbgrader's gradebook knows (from earlier runs)."""
        if not self.db_path.exists():
            return []
        try:
            with self.db() as db:
                return [r[0] for r in db.execute("SELECT id FROM student")]
        except sqlite3.Error:
            return []

    def speeds(self) -> dict[tuple[str, str], dict]:
        """(student, assignment) -> the ``--speed`` entry (:mod:`autograder.output.speed`) of the notebook graded."""
        if not self.db_path.exists():
            return {}
        with self.db() as db:
            db.executescript(_SCHEMA)
            rows = db.execute("SELECT s.student_id, s.assignment, s.entry FROM bngrade_speed s JOIN bngrade_result r "
                              "ON r.student_id = s.student_id AND r.assignment = s.assignment "
                              "AND r.sha256 = s.sha256").fetchall()
        return {(student, assignment): json.loads(entry) for student, assignment, entry in rows}

    def save_speed(self, student: str, assignment: str, entry: dict, sha256: str) -> None:
        with self.db() as db:
            db.execute("INSERT OR REPLACE INTO bngrade_speed (student_id, assignment, entry, sha256) "
                       "VALUES (?, ?, ?, ?)", (student, assignment, json.dumps(entry), sha256))

    # -- paths
    def submitted(self, student: str, assignment: str) -> Path:
        return self.root / "submitted" / student / assignment / f"{assignment}.ipynb"

    def autograded(self, student: str, assignment: str) -> Path:
        return self.root / "autograded" / student / assignment / f"{assignment}.ipynb"

    def feedback(self, student: str, assignment: str) -> Path:
        return self.root / "feedback" / student / f"{assignment}.html"


def tree_sha256(folder: Path) -> str:
    """A fingerprint of a folder's files (names and contents)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts
                       and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `path` so that a reader (or a kill -9) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
