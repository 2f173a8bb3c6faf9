"""Finding the class's submissions: nbgrader's folders, an LMS zip, or one notebook.

Three layouts are accepted for ``python -m autograder grade SUBMISSIONS``:

**nbgrader's layout** (a folder): ``SUBMISSIONS/<student_id>/<assignment>/<assignment>.ipynb``,
with an optional ``timestamp.txt`` beside the notebook (what ``nbgrader collect`` makes; a
course folder that holds ``submitted/`` works too). A student folder without the assignment's
notebook is reported as ``missing``.

**An LMS zip** (one notebook per student, ``--assignment`` names the assignment). The student
id comes from each notebook's *first path component* in the zip (its file name when the zip is
flat, its folder when each student has one) through a regular expression whose group
``student`` is the id. The default, ``^(?P<student>[^_/]+)_``, takes everything before the first
underscore, which fits the LMS exports:

- Canvas: ``doejane_12345_67890_bn-numpy-forward.ipynb`` -> ``doejane`` (``doejane_LATE_...`` too);
- Moodle: ``Jane Doe_4242_assignsubmission_file_/bn-numpy-forward.ipynb`` -> ``Jane-Doe``.

Pass ``--id-pattern`` for another LMS, e.g. ``'_(?P<student>\\d+)_'`` for Canvas's numeric
user id. Characters other than letters, digits and ``._@-`` in an id become ``-``. Files that
are not notebooks (``__MACOSX/``, PDFs) are skipped. A notebook whose name does not match the
pattern is reported as ``malformed`` under its sanitized file name, never dropped in silence.
Nothing is ever extracted to disk by its zip name: an entry whose name is absolute or holds
``..``, or that is a symbolic link, makes that student's row ``malformed`` (with the reason),
and so does a student with several notebooks none of which is named after the assignment.

**One notebook**: ``SUBMISSIONS`` is a ``.ipynb`` file; the student id is ``--student``, or the
file's name without ``.ipynb`` (its folder's name when the file is named after the assignment).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from autograder.grading.jobs import Status

#: The default regular expression for student ids in an LMS zip (see the module docstring).
DEFAULT_ID_PATTERN = r"^(?P<student>[^_/]+)_"
#: Notebooks larger than this are not read (malformed): a zip bomb, or not a homework.
MAX_NOTEBOOK_BYTES = 20 * 2**20
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._@-]+")


class SubmissionsError(ValueError):
    """SUBMISSIONS cannot be read as a whole (the message says why)."""


@dataclass
class Submission:
    """One student's notebook for one assignment, or why there is none to grade.

    ``problem`` is None for a notebook to grade; otherwise ``status`` is ``missing`` or
    ``malformed`` and ``problem`` is the reason shown in the CSV and the feedback.
    """

    student: str
    assignment: str
    data: bytes | None = None
    origin: str = ""
    timestamp: datetime | None = None
    status: str | None = None
    problem: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data or b"").hexdigest()


def sanitize_id(raw: str) -> str:
    """A student id safe as a folder name and a CSV cell: runs of odd characters become '-'."""
    cleaned = _UNSAFE_ID.sub("-", raw.strip()).strip("-.")
    return cleaned or "unknown"


def collect(source: str | os.PathLike, assignments: list[str], assignment: str | None = None,
            id_pattern: str | None = None, student: str | None = None) -> list[Submission]:
    """All submissions in `source` for `assignment` (or for each of `assignments` found).

    Args:
        source: a folder in nbgrader's layout, a ``.zip`` from an LMS, or one ``.ipynb``.
        assignments: the assignments the course knows (``solutions/<name>/``).
        assignment: grade only this one; required for a zip, optional otherwise.
        id_pattern: the regular expression for student ids in a zip. Default:
            :data:`DEFAULT_ID_PATTERN`.
        student: the student id of a single notebook.

    Raises:
        SubmissionsError: `source` does not exist, is not one of the three layouts, or names
        an assignment the course does not have.
    """
    path = Path(source)
    if assignment is not None and assignment not in assignments:
        raise SubmissionsError(f"unknown assignment {assignment!r}: the course has {', '.join(assignments)}")
    if not path.exists():
        raise SubmissionsError(f"{path} does not exist")
    if path.is_dir():
        return _from_folders(path, assignments, assignment)
    if path.suffix.lower() == ".zip":
        if assignment is None:
            raise SubmissionsError("a zip from an LMS holds one assignment: name it with --assignment")
        found = _from_zip(path, assignment, id_pattern or DEFAULT_ID_PATTERN)
        if not found:
            raise SubmissionsError(f"{path} holds no notebook (.ipynb)")
        return found
    if path.suffix.lower() == ".ipynb":
        return [_from_notebook(path, assignments, assignment, student)]
    raise SubmissionsError(f"{path} is neither a folder (nbgrader's layout), a .zip nor a .ipynb")


def _read_limited(path: Path) -> tuple[bytes | None, str | None]:
    if path.is_symlink():
        return None, f"{path.name} is a symbolic link, not a notebook"
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            return None, (f"{path.name} is {size / 2**20:.0f} MB: larger than the "
                          f"{MAX_NOTEBOOK_BYTES // 2**20} MB a notebook may be")
        return path.read_bytes(), None
    except OSError as exc:
        return None, f"{path.name} could not be read: {exc.strerror}"


def _from_notebook(path: Path, assignments: list[str], assignment: str | None,
                   student: str | None) -> Submission:
    if assignment is None:
        if path.stem in assignments:
            assignment = path.stem
        else:
            raise SubmissionsError(f"cannot tell which assignment {path.name} is: pass --assignment")
    if student is None:
        student = path.resolve().parent.name if path.stem == assignment else path.stem
    data, problem = _read_limited(path)
    return Submission(sanitize_id(student), assignment, data, str(path),
                      _mtime(path), Status.MALFORMED if problem else None, problem)


def _from_folders(root: Path, assignments: list[str], assignment: str | None) -> list[Submission]:
    if (root / "submitted").is_dir():
        root = root / "submitted"
    wanted = [assignment] if assignment else assignments
    students = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    if not students:
        raise SubmissionsError(f"{root} holds no student folders "
                               "(expected <student_id>/<assignment>/<assignment>.ipynb)")
    found = {a for s in students if s.is_dir() for a in wanted if (s / a).exists()}
    if assignment is None:
        wanted = [a for a in wanted if a in found]
        if not wanted:
            raise SubmissionsError(f"no folder in {root}/<student_id>/ is named after an assignment "
                                   f"({', '.join(assignments)})")
    out = []
    for folder in students:
        sid = sanitize_id(folder.name)
        for a in wanted:
            nb = folder / a / f"{a}.ipynb"
            if folder.is_symlink() or (folder / a).is_symlink():
                out.append(Submission(sid, a, origin=str(folder), status=Status.MALFORMED,
                                      problem="the submission folder is a symbolic link"))
            elif not folder.is_dir():
                continue
            elif not nb.exists() and not nb.is_symlink():
                others = sorted(p.name for p in (folder / a).glob("*.ipynb")) if (folder / a).is_dir() else []
                why = (f"no {a}.ipynb in the submission (found: {', '.join(others)})" if others
                       else f"no submission for {a}")
                out.append(Submission(sid, a, origin=str(folder / a), status=Status.MISSING, problem=why))
            else:
                data, problem = _read_limited(nb)
                out.append(Submission(sid, a, data, str(nb), _timestamp(folder / a) or _mtime(nb),
                                      Status.MALFORMED if problem else None, problem))
    return out


def _from_zip(path: Path, assignment: str, id_pattern: str) -> list[Submission]:
    try:
        pattern = re.compile(id_pattern)
    except re.error as exc:
        raise SubmissionsError(f"--id-pattern {id_pattern!r} is not a regular expression: {exc}") from None
    if "student" not in pattern.groupindex:
        raise SubmissionsError(f"--id-pattern {id_pattern!r} has no group named 'student'")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionsError(f"{path} is not a readable zip file: {exc}") from None
    entries: dict[str, list[tuple[zipfile.ZipInfo, str | None]]] = {}
    with archive:
        for info in archive.infolist():
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if info.is_dir() or not name.lower().endswith(".ipynb") or "__MACOSX" in parts:
                continue
            inside = [p for p in parts if p not in ("/", "..", ".")]
            first = inside[0] if len(inside) > 1 else PurePosixPath(name).name
            match = pattern.search(first)
            problem = None
            if name.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", name):
                problem = f"zip entry {info.filename!r} points outside the archive ('..' or an absolute path): not read"
            elif stat.S_ISLNK(info.external_attr >> 16):
                problem = f"zip entry {info.filename!r} is a symbolic link, not a notebook: not read"
            elif not match or not match.group("student"):
                sid = sanitize_id(PurePosixPath(name).stem)
                entries.setdefault(sid, []).append(
                    (info, f"zip entry {info.filename!r} does not match the student id pattern {id_pattern!r}"))
                continue
            if match and match.group("student"):
                sid = sanitize_id(match.group("student"))
            else:
                sid = sanitize_id(PurePosixPath(name).stem)
            entries.setdefault(sid, []).append((info, problem))
        out = []
        for sid in sorted(entries):
            out.append(_zip_submission(archive, sid, assignment, entries[sid], path))
    return out


def _zip_submission(archive: zipfile.ZipFile, sid: str, assignment: str,
                    entries: list[tuple[zipfile.ZipInfo, str | None]], path: Path) -> Submission:
    bad = [problem for _, problem in entries if problem]
    if bad:
        return Submission(sid, assignment, origin=str(path), status=Status.MALFORMED, problem=bad[0])
    if len(entries) > 1:
        named = [e for e in entries if PurePosixPath(e[0].filename).name.endswith(f"{assignment}.ipynb")]
        if len(named) != 1:
            names = ", ".join(PurePosixPath(i.filename).name for i, _ in entries)
            return Submission(sid, assignment, origin=str(path), status=Status.MALFORMED,
                              problem=f"several notebooks and none clearly the assignment's: {names}")
        entries = named
    info = entries[0][0]
    when = datetime(*info.date_time, tzinfo=timezone.utc) if info.date_time[0] >= 1980 else None
    if info.file_size > MAX_NOTEBOOK_BYTES:
        return Submission(sid, assignment, origin=f"{path}:{info.filename}", status=Status.MALFORMED,
                          problem=f"{info.filename} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB")
    try:
        with archive.open(info) as f:
            data = f.read(MAX_NOTEBOOK_BYTES + 1)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
        return Submission(sid, assignment, origin=f"{path}:{info.filename}", status=Status.MALFORMED,
                          problem=f"zip entry {info.filename!r} could not be read: {exc}")
    if len(data) > MAX_NOTEBOOK_BYTES:
        return Submission(sid, assignment, origin=f"{path}:{info.filename}", status=Status.MALFORMED,
                          problem=f"{info.filename} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB")
    return Submission(sid, assignment, data, f"{path}:{info.filename}", when)


def _timestamp(folder: Path) -> datetime | None:
    """nbgrader's timestamp.txt, if present and readable."""
    stamp = folder / "timestamp.txt"
    if stamp.is_file() and not stamp.is_symlink():
        try:
            # nbgrader takes seconds to import: `python -m autograder grade --help` reads this module
            from nbgrader.utils import parse_utc  # noqa: PLC0415

            return parse_utc(stamp.read_text()[:100].strip())
        except (ValueError, OSError, ImportError):
            return None
    return None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.lstat().st_mtime, tz=timezone.utc)
    except OSError:
        return None
