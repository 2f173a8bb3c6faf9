"""Finding the class's submissions: nbgrader's folders, an LMS zip, or one notebook.

Three layouts are accepted for ``python -m autograder grade SUBMISSIONS``:

**nbgrader's layout** (a folder): ``SUBMISSIONS/<student_id>/<assignment>/<assignment>.ipynb``,
with an optional ``timestamp.txt`` beside the notebook (what ``nbgrader collect`` makes; a
course folder that holds ``submitted/`` works too). A student folder without the assignment's
notebook is reported as ``missing``.

**An LMS zip** (``--assignment`` names the assignment). Each notebook's *first path component*
(its file name when the zip is flat, its folder when each student has one) names the student:

- Canvas ("Download Submissions"): ``<name>_<user id>_<submission id>_<file>``, with ``late_``
  before the user id for a late one; a resubmitted file of the same name is ``<file>-1``,
  ``<file>-2``... So ``zoë_101_1_bn-numpy-forward.ipynb`` is the student ``zoë``, Canvas user 101.
- Moodle: one folder per student, ``<Full Name>_<participant id>_assignsubmission_file_/``.
- Anything else: the part before the first underscore; ``--id-pattern`` (a regular expression
  with a group ``student``, and optionally one ``lms_id``) reads another LMS's names.

**One notebook**: ``SUBMISSIONS`` is a ``.ipynb`` file; the student is ``--student``, or the
file's name without ``.ipynb`` (its folder's name when the file is named after the assignment).

Names and ids. The name as written (Unicode, NFC-normalized) is what ``grades.csv``, the report
and the feedback show. nbgrader needs an id that is also a folder name and never a glob
(:func:`student_id`): the name itself when it holds only letters, digits (any script) and
``._@-``; otherwise a readable slug of it plus ``-`` and 6 hex digits of the SHA-256 of the name
as written (``Jane Doe`` -> ``Jane-Doe-<6 hex>``), so that two different names never share an
id. Should two files still claim one id (the same id for two different names or LMS user ids,
or ids that differ only in case), :func:`collect` raises an error naming both files, before
anything is graded.

Several files for one student (:data:`RULES`): those whose file name has the assignment's name
in it, if any; of these Canvas's highest resubmission number (then its highest submission id), Moodle's
latest file in the student's folder, or otherwise the newest in the zip. ``--pick FILE``
(repeatable; a zip entry's name or file name) overrides. The submission's ``note`` says which
file was graded and which were set aside; it goes into the reason.

Size. A notebook's saved outputs (and cell attachments) are never graded, so a file over
:data:`MAX_NOTEBOOK_BYTES` is graded without them when what is left fits; a notebook whose code
and text alone are larger is ``malformed`` with a reason that says so. A file over
:data:`MAX_FILE_BYTES` (a zip bomb, or not a homework) is not read at all.

Files that are not notebooks (``__MACOSX/``, PDFs) are skipped. A notebook whose name matches
no layout is reported as ``malformed`` under its file name, never dropped in silence. Nothing
is ever extracted to disk by its zip name: an entry whose name is absolute or holds ``..``, or
that is a symbolic link, makes that student's row ``malformed`` (with the reason).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import unicodedata
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from autograder.grading.jobs import Status

#: The default regular expression for student ids in a zip of no known LMS (see the module docstring).
DEFAULT_ID_PATTERN = r"^(?P<student>[^_/]+)_"
#: Canvas's "Download Submissions" file names (see the module docstring).
CANVAS_NAME = re.compile(r"^(?P<student>[^_/]+)_(?:late_)?(?P<lms_id>\d+)_(?P<order>\d+)_(?P<file>.+)$", re.I)
#: Moodle's folder per student.
MOODLE_FOLDER = re.compile(r"^(?P<student>.+?)_(?P<lms_id>\d+)_assign(?:submission|feedback)_\w*$")
#: A Canvas resubmission: the file's name with ``-1``, ``-2``... before ``.ipynb``.
_RESUBMISSION = re.compile(r"^(?P<base>.*?)(?:-(?P<k>\d+))?\.ipynb$", re.I)
#: The rule that picks one file among a student's several, per layout (said in the reason).
RULES = {"canvas": "the highest Canvas resubmission number", "moodle": "the latest file in the Moodle folder",
         "zip": "the newest file in the zip", "pick": "picked with --pick"}
#: What is graded of a notebook (without its outputs) may be at most this large.
MAX_NOTEBOOK_BYTES = 20 * 2**20
#: A file larger than this is not read at all (a zip bomb, or not a homework).
MAX_FILE_BYTES = 256 * 2**20
#: The longest id kept as written (characters); a longer name is shortened and hashed.
MAX_ID_CHARS = 64
_HASH_CHARS = 6
_ID_PUNCTUATION = "._@-"


class SubmissionsError(ValueError):
    """SUBMISSIONS cannot be read as a whole (the message says why)."""


@dataclass
class Submission:
    """One student's notebook for one assignment, or why there is none to grade.

    ``problem`` is None for a notebook to grade; otherwise ``status`` is ``missing`` or
    ``malformed`` and ``problem`` is the reason shown in the CSV and the feedback.

    Attributes:
        student: the id nbgrader and the folders use (:func:`student_id` of ``name``).
        name: the student's name as written (NFC). Default: the id.
        lms_id: the LMS's own id of the student (Canvas's user id, Moodle's participant id),
            where the file names carry one. Default: empty.
        note: which file was graded and which were set aside, or what was left out of it;
            added to the reason. Default: empty.
    """

    student: str
    assignment: str
    data: bytes | None = None
    origin: str = ""
    timestamp: datetime | None = None
    status: str | None = None
    problem: str | None = None
    name: str = ""
    lms_id: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.student

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data or b"").hexdigest()


def _id_char(ch: str) -> bool:
    return ch in _ID_PUNCTUATION or unicodedata.category(ch)[0] in "LMN"


def student_id(name: str) -> str:
    """The id of the student named `name`: safe as a folder name, a CSV cell and an nbgrader id.

    The name itself (NFC) when it has only letters, digits and ``._@-`` and is at most
    :data:`MAX_ID_CHARS` long; otherwise a slug (runs of other characters become ``-``) and 6
    hex digits of the name's SHA-256, so different names get different ids.
    """
    written = unicodedata.normalize("NFC", name.strip())
    if written and all(map(_id_char, written)) and not written.startswith(".") and len(written) <= MAX_ID_CHARS:
        return written
    slug = "".join(ch if _id_char(ch) else "-" for ch in written)
    slug = re.sub(r"-{2,}", "-", slug).strip("-.")[:MAX_ID_CHARS - _HASH_CHARS - 1].strip("-.") or "unknown"
    return f"{slug}-{hashlib.sha256(written.encode()).hexdigest()[:_HASH_CHARS]}"


def written_name(raw: str) -> str:
    """A name as written, NFC-normalized, without surrounding blanks."""
    return unicodedata.normalize("NFC", raw.strip())


def collect(source: str | os.PathLike, assignments: list[str], assignment: str | None = None,
            id_pattern: str | None = None, student: str | None = None,
            picks: Iterable[str] = ()) -> list[Submission]:
    """All submissions in `source` for `assignment` (or for each of `assignments` found).

    Args:
        source: a folder in nbgrader's layout, a ``.zip`` from an LMS, or one ``.ipynb``.
        assignments: the assignments the course knows (``solutions/<name>/``).
        assignment: grade only this one; required for a zip, optional otherwise.
        id_pattern: the regular expression for student ids in a zip. Default: Canvas's and
            Moodle's names, else :data:`DEFAULT_ID_PATTERN`.
        student: the student's name of a single notebook.
        picks: ``--pick``: zip entries (names or file names) to grade, whatever the LMS's rule.

    Raises:
        SubmissionsError: `source` does not exist, is not one of the three layouts, names an
        assignment the course does not have, two files claim one student id, or a pick
        names no file.
    """
    path = Path(source)
    picks = list(picks)
    if assignment is not None and assignment not in assignments:
        raise SubmissionsError(f"unknown assignment {assignment!r}: the course has {', '.join(assignments)}")
    if not path.exists():
        raise SubmissionsError(f"{path} does not exist")
    if picks and not (path.is_file() and path.suffix.lower() == ".zip"):
        raise SubmissionsError("--pick chooses among the files of a zip; SUBMISSIONS is not a zip")
    if path.is_dir():
        found = _from_folders(path, assignments, assignment)
    elif path.suffix.lower() == ".zip":
        if assignment is None:
            raise SubmissionsError("a zip from an LMS holds one assignment: name it with --assignment")
        found = _from_zip(path, assignment, id_pattern, picks)
        if not found:
            raise SubmissionsError(f"{path} holds no notebook (.ipynb)")
    elif path.suffix.lower() == ".ipynb":
        found = [_from_notebook(path, assignments, assignment, student)]
    else:
        raise SubmissionsError(f"{path} is neither a folder (nbgrader's layout), a .zip nor a .ipynb")
    check_ids(found)
    return found


def check_ids(subs: Iterable[Submission], known: Mapping[str, tuple[str, str]] | None = None) -> None:
    """Raise SubmissionsError if two submissions (or one and `known`) claim one student id.

    One id must mean one student: the same name as written and, where both have one, the same
    LMS id; ids that differ only in case are one folder on some file systems, so they clash too.

    Args:
        subs: the submissions found.
        known: id -> (name as written, LMS id) of the students already in the grading folder.
    """
    seen: dict[str, Submission] = {}
    for sub in subs:
        key = sub.student.casefold()
        other = seen.setdefault(key, sub)
        if other is sub or (other.student == sub.student and _same_student(other, sub.name, sub.lms_id)):
            continue
        raise SubmissionsError(
            f"two files claim the student id {sub.student!r}: {other.origin} ({_who(other.name, other.lms_id)}) and "
            f"{sub.origin} ({_who(sub.name, sub.lms_id)}); nothing was graded. Rename one, or pass --id-pattern")
    for sub in seen.values():
        if known and sub.student in known:
            name, lms_id = known[sub.student]
            if not _same_student(sub, name, lms_id):
                raise SubmissionsError(
                    f"{sub.origin} ({_who(sub.name, sub.lms_id)}) has the student id {sub.student!r} of a student "
                    f"graded earlier in this folder ({_who(name, lms_id)}); nothing was graded. Grade it into "
                    "another --out folder, or rename the file")


def _same_student(sub: Submission, name: str, lms_id: str) -> bool:
    return sub.name == name and (not sub.lms_id or not lms_id or sub.lms_id == lms_id)


def _who(name: str, lms_id: str) -> str:
    return f"{name!r}, LMS id {lms_id}" if lms_id else repr(name)


# ---------------------------------------------------------------- size: what is graded
def _without_outputs(data: bytes) -> bytes | None:
    """The notebook in `data` without its saved outputs and attachments; None if it is not JSON."""
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        return None
    for cell in raw["cells"]:
        if isinstance(cell, dict):
            cell.pop("attachments", None)
            if cell.get("cell_type") == "code":
                cell["outputs"], cell["execution_count"] = [], None
    return json.dumps(raw, ensure_ascii=False).encode()


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{max(1, round(size / 2**10))} KB"


def fit(data: bytes, file: str) -> tuple[bytes | None, str | None, str]:
    """What of `data` is graded: (notebook bytes or None, problem or None, note for the reason).

    A notebook within :data:`MAX_NOTEBOOK_BYTES` is kept as is; a larger one loses its saved
    outputs (never graded: they are cleared before grading anyway), and is malformed only when
    what is left is still too large.
    """
    if len(data) <= MAX_NOTEBOOK_BYTES:
        return data, None, ""
    stripped = _without_outputs(data)
    limit = _mb(MAX_NOTEBOOK_BYTES)
    if stripped is None:
        return None, f"{file} is {_mb(len(data))} and not a notebook (not JSON with a list of cells)", ""
    if len(stripped) > MAX_NOTEBOOK_BYTES:
        return None, (f"{file} is {_mb(len(stripped))} even without its saved outputs: its code and text are "
                      f"larger than the {limit} a graded notebook may be"), ""
    return stripped, None, (f"{file} is {_mb(len(data))} with its saved outputs; they were removed before "
                            f"grading ({_mb(len(stripped))} without)")


def _too_large(file: str, size: int) -> str:
    return f"{file} is {_mb(size)}: larger than the {_mb(MAX_FILE_BYTES)} a file may be, so it was not read"


def _read_limited(path: Path) -> tuple[bytes | None, str | None, str]:
    if path.is_symlink():
        return None, f"{path.name} is a symbolic link, not a notebook", ""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return None, _too_large(path.name, size), ""
        return fit(path.read_bytes(), path.name)
    except OSError as exc:
        return None, f"{path.name} could not be read: {exc.strerror}", ""


# ---------------------------------------------------------------- one notebook, nbgrader's folders
def _from_notebook(path: Path, assignments: list[str], assignment: str | None,
                   student: str | None) -> Submission:
    if assignment is None:
        if path.stem in assignments:
            assignment = path.stem
        else:
            raise SubmissionsError(f"cannot tell which assignment {path.name} is: pass --assignment")
    if student is None:
        student = path.resolve().parent.name if path.stem == assignment else path.stem
    data, problem, note = _read_limited(path)
    return Submission(student_id(student), assignment, data, str(path), _mtime(path),
                      Status.MALFORMED if problem else None, problem, written_name(student), note=note)


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
        sid, name = student_id(folder.name), written_name(folder.name)
        for a in wanted:
            nb = folder / a / f"{a}.ipynb"
            if folder.is_symlink() or (folder / a).is_symlink():
                out.append(Submission(sid, a, origin=str(folder), status=Status.MALFORMED,
                                      problem="the submission folder is a symbolic link", name=name))
            elif not folder.is_dir():
                continue
            elif not nb.exists() and not nb.is_symlink():
                others = sorted(p.name for p in (folder / a).glob("*.ipynb")) if (folder / a).is_dir() else []
                why = (f"no {a}.ipynb in the submission (found: {', '.join(others)})" if others
                       else f"no submission for {a}")
                out.append(Submission(sid, a, origin=str(folder / a), status=Status.MISSING, problem=why, name=name))
            else:
                data, problem, note = _read_limited(nb)
                out.append(Submission(sid, a, data, str(nb), _timestamp(folder / a) or _mtime(nb),
                                      Status.MALFORMED if problem else None, problem, name, note=note))
    return out


# ---------------------------------------------------------------- an LMS zip
@dataclass
class _Entry:
    """One notebook in a zip, and whose it is."""

    info: zipfile.ZipInfo
    name: str               # the entry's name in the zip, decoded
    student: str            # the student's name as written (NFC)
    lms_id: str = ""
    layout: str = "zip"     # a key of RULES
    order: int = 0          # Canvas's submission id
    problem: str | None = None

    @property
    def file(self) -> str:
        return PurePosixPath(self.name).name

    def rank(self, assignment: str) -> tuple:
        """Larger is the file the LMS's rule grades (see the module docstring)."""
        original = CANVAS_NAME.match(self.file).group("file") if self.layout == "canvas" else self.file
        m = _RESUBMISSION.match(original)
        k = int(m.group("k") or 0) if m else 0
        named = assignment in original  # "bn-torch-1.ipynb", "bn-torch (1).ipynb": the assignment's
        resubmission = (k, self.order) if self.layout == "canvas" else (0, 0)
        return (named, *resubmission, self.info.date_time, self.name)


def _decoded(info: zipfile.ZipInfo) -> str:
    """The entry's name: zips made without the UTF-8 flag (0x800) often hold UTF-8 all the same."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name.replace("\\", "/")


def _whose(first: str, nested: bool, pattern: re.Pattern | None) -> tuple[str, str, str, int] | None:
    """(name as written, LMS id, layout, Canvas order) of a zip entry's first path component."""
    if pattern is not None:
        m = pattern.search(first)
        if not m or not m.group("student"):
            return None
        lms_id = m.group("lms_id") if "lms_id" in pattern.groupindex else ""
        return written_name(m.group("student")), lms_id or "", "zip", 0
    if nested and (m := MOODLE_FOLDER.match(first)):
        return written_name(m.group("student")), m.group("lms_id"), "moodle", 0
    if not nested and (m := CANVAS_NAME.match(first)):
        return written_name(m.group("student")), m.group("lms_id"), "canvas", int(m.group("order"))
    m = re.search(DEFAULT_ID_PATTERN, first)
    return (written_name(m.group("student")), "", "zip", 0) if m else None


def _from_zip(path: Path, assignment: str, id_pattern: str | None, picks: list[str]) -> list[Submission]:
    pattern = None
    if id_pattern is not None:
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
    entries: dict[str, list[_Entry]] = {}
    with archive:
        for info in archive.infolist():
            name = _decoded(info)
            parts = PurePosixPath(name).parts
            if info.is_dir() or not name.lower().endswith(".ipynb") or "__MACOSX" in parts:
                continue
            inside = [p for p in parts if p not in ("/", "..", ".")]
            first = inside[0] if len(inside) > 1 else PurePosixPath(name).name
            whose = _whose(first, len(inside) > 1, pattern) or (written_name(PurePosixPath(name).stem), "", "zip", 0)
            entry = _Entry(info, name, *whose)
            if name.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", name):
                entry.problem = f"zip entry {name!r} points outside the archive ('..' or an absolute path): not read"
            elif stat.S_ISLNK(info.external_attr >> 16):
                entry.problem = f"zip entry {name!r} is a symbolic link, not a notebook: not read"
            elif _whose(first, len(inside) > 1, pattern) is None:
                entry.problem = (f"zip entry {name!r} does not match the student id pattern "
                                 f"{id_pattern or 'of Canvas, Moodle or ' + repr(DEFAULT_ID_PATTERN)}")
            entries.setdefault(student_id(entry.student), []).append(entry)
        _check_picks(picks, entries)
        out = [_zip_submission(archive, sid, assignment, entries[sid], path, picks) for sid in sorted(entries)]
    return out


def _picked(entry: _Entry, picks: list[str]) -> bool:
    return entry.name in picks or entry.file in picks


def _check_picks(picks: list[str], entries: Mapping[str, list[_Entry]]) -> None:
    every = [e for group in entries.values() for e in group]
    unknown = [p for p in picks if not any(p in (e.name, e.file) for e in every)]
    if unknown:
        raise SubmissionsError(f"--pick {unknown[0]!r} is no notebook in the zip")
    for group in entries.values():
        chosen = [e for e in group if _picked(e, picks)]
        if len(chosen) > 1:
            raise SubmissionsError(f"--pick chooses {len(chosen)} files of one student: "
                                   f"{', '.join(e.file for e in chosen)}; pick one")


def _zip_submission(archive: zipfile.ZipFile, sid: str, assignment: str, entries: list[_Entry],
                    path: Path, picks: list[str]) -> Submission:
    for entry in entries[1:]:
        if entry.student != entries[0].student or (entry.lms_id and entries[0].lms_id
                                                   and entry.lms_id != entries[0].lms_id):
            raise SubmissionsError(
                f"two files claim the student id {sid!r}: {path}:{entries[0].name} "
                f"({_who(entries[0].student, entries[0].lms_id)}) and {path}:{entry.name} "
                f"({_who(entry.student, entry.lms_id)}); nothing was graded. Rename one, or pass --id-pattern")
    whose = {"name": entries[0].student, "lms_id": next((e.lms_id for e in entries if e.lms_id), "")}
    bad = [e.problem for e in entries if e.problem]
    if bad:
        return Submission(sid, assignment, origin=str(path), status=Status.MALFORMED, problem=bad[0], **whose)
    note = ""
    chosen = next((e for e in entries if _picked(e, picks)), None)
    if len(entries) > 1:
        rule = RULES["pick"] if chosen else RULES[entries[0].layout]
        chosen = chosen or max(entries, key=lambda e: e.rank(assignment))
        aside = ", ".join(e.file for e in entries if e is not chosen)
        note = f"graded {chosen.file} ({rule}); set aside: {aside}"
    chosen = chosen or entries[0]
    info, origin, file = chosen.info, f"{path}:{chosen.name}", chosen.file
    when = datetime(*info.date_time, tzinfo=timezone.utc) if info.date_time[0] >= 1980 else None
    if info.file_size > MAX_FILE_BYTES:
        return Submission(sid, assignment, origin=origin, status=Status.MALFORMED,
                          problem=_too_large(file, info.file_size), **whose)
    try:
        with archive.open(info) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
        return Submission(sid, assignment, origin=origin, status=Status.MALFORMED,
                          problem=f"zip entry {file!r} could not be read: {exc}", **whose)
    if len(data) > MAX_FILE_BYTES:
        return Submission(sid, assignment, origin=origin, status=Status.MALFORMED,
                          problem=_too_large(file, len(data)), **whose)
    data, problem, size_note = fit(data, file)
    note = "; ".join(n for n in (note, size_note) if n)
    return Submission(sid, assignment, data, origin, when, Status.MALFORMED if problem else None, problem,
                      note=note, **whose)


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
