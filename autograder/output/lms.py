"""Grades in an LMS's own import format: ``grade --lms canvas`` and ``grade --lms moodle``.

Both files are derived, like ``grades.csv``, from the rows of :func:`autograder.output.report.rows`
(the gradebook's scores, a grader's manual score included), and are rewritten on every run and by
``report --lms``. The student's LMS id comes from the collected file names
(:mod:`autograder.grading.submissions`): a student without one (graded from nbgrader's folders or
one notebook) cannot be matched by the LMS and is left out, and :func:`files` says who. This
module only formats (it imports nothing heavy: the CLI's ``--help`` reads :data:`LMS_FORMATS`);
:func:`autograder.output.report.write_lms` writes.

**Canvas** (``grading/canvas.csv``), the gradebook's "Import" CSV: the columns ``Student``,
``ID`` (Canvas's user id, which is what Canvas matches on), ``SIS User ID``, ``SIS Login ID``,
``Section``, then one points column per assignment, headed by its name (Canvas makes a new
assignment of a column it does not know; rename the header to ``<name> (<Canvas assignment id>)``
to fill an existing one). The second row, ``Points Possible``, gives each assignment's points.

**Moodle** (``grading/moodle-<assignment>.csv``, one per assignment), the assignment's offline
grading worksheet ("Upload grading worksheet"): ``Identifier`` (``Participant <id>``, the id in
Moodle's folder names), ``Full name``, ``Grade``, ``Maximum grade``, ``Last modified (grade)``.
Moodle's importer finds its columns by these headers and needs the first, third and last.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict

__all__ = ["LMS_FORMATS", "CANVAS_FIELDS", "MOODLE_FIELDS", "files", "canvas_csv", "moodle_csv"]

#: The formats ``--lms`` writes.
LMS_FORMATS = ("canvas", "moodle")
#: Canvas's gradebook import columns before the assignments.
CANVAS_FIELDS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
#: Moodle's grading worksheet columns.
MOODLE_FIELDS = ["Identifier", "Full name", "Grade", "Maximum grade", "Last modified (grade)"]
#: How Moodle's worksheet writes a participant's id (its ``hiddenuser`` string and the id).
MOODLE_PARTICIPANT = "Participant {}"


def _csv(header: list[str], table: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(table)
    return buffer.getvalue()


def canvas_csv(rows: list[dict]) -> tuple[str, list[str]]:
    """Canvas's import CSV of `rows` (the report's), and the students left out (no Canvas id)."""
    assignments = sorted({r["assignment"] for r in rows})
    points = {a: max(float(r["max_score"]) for r in rows if r["assignment"] == a) for a in assignments}
    students: dict[str, dict] = defaultdict(dict)
    left_out = sorted({r["name"] for r in rows if not r["lms_id"]})
    for r in rows:
        if r["lms_id"]:
            students[r["lms_id"]].setdefault("name", r["name"])
            students[r["lms_id"]][r["assignment"]] = r["score"]
    table = [["Points Possible", "", "", "", "", *(f"{points[a]:g}" for a in assignments)]]
    for lms_id, got in sorted(students.items(), key=lambda kv: (kv[1]["name"], kv[0])):
        table.append([got["name"], lms_id, "", "", "", *(got.get(a, "") for a in assignments)])
    return _csv(CANVAS_FIELDS + assignments, table), left_out


def moodle_csv(rows: list[dict], assignment: str) -> tuple[str, list[str]]:
    """Moodle's grading worksheet of `assignment`, and the students left out (no participant id)."""
    mine = [r for r in rows if r["assignment"] == assignment]
    left_out = sorted(r["name"] for r in mine if not r["lms_id"])
    table = [[MOODLE_PARTICIPANT.format(r["lms_id"]), r["name"], r["score"], r["max_score"], r["graded_at"]]
             for r in sorted(mine, key=lambda r: (r["name"], r["lms_id"])) if r["lms_id"]]
    return _csv(MOODLE_FIELDS, table), left_out


def files(rows: list[dict], lms: str) -> tuple[dict[str, str], list[str]]:
    """`lms`'s import files of `rows` (file name -> text), and the students left out (no LMS id).

    Raises:
        ValueError: `lms` is none of :data:`LMS_FORMATS`.
    """
    if lms not in LMS_FORMATS:
        raise ValueError(f"unknown LMS {lms!r}: the formats are {', '.join(LMS_FORMATS)}")
    if lms == "canvas":
        text, left_out = canvas_csv(rows)
        return {"canvas.csv": text}, left_out
    out, left_out = {}, set()
    for assignment in sorted({r["assignment"] for r in rows}):
        out[f"moodle-{assignment}.csv"], missing = moodle_csv(rows, assignment)
        left_out.update(missing)
    return out, sorted(left_out)
