"""The written answers, which a grader scores by hand: what waits, and the provisional mark.

Each assignment has a few written questions, nbgrader "manually graded answer" cells (markdown,
``solution`` and ``grade``, with points). The autograder gives them no points: nbgrader's
``SaveAutoGrades`` leaves their ``auto_score`` empty and marks them ``needs_manual_grade`` in the
gradebook, so formgrader lists them for a grader. When a grader scores one there, formgrader
sets its ``manual_score`` and clears the mark; ``python -m autograder report DIR`` then rebuilds
``grades.csv`` and ``report.html`` with that score.

Until then a total is provisional. In ``grades.csv`` two columns, after every other, say so:
``provisional`` (``yes`` while any written answer of that row waits, else empty) and
``manual_pending`` (how many wait); the part column of a waiting answer is left empty rather
than showing a 0 nobody gave. ``report.html`` counts the waiting answers per assignment.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict

from nbgrader.api import Gradebook

__all__ = ["FIELDS", "PROVISIONAL", "pending", "mark", "waiting_per_assignment", "html_section", "summary_lines"]

#: The CSV's columns for the written answers, after all others.
FIELDS = ["provisional", "manual_pending"]
#: The ``provisional`` column's value while answers wait.
PROVISIONAL = "yes"


def pending(db_url: str) -> dict[tuple[str, str], list[str]]:
    """(student, assignment) -> the grade ids of the answers that still need a grader."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    with Gradebook(db_url) as gb:
        for assignment in gb.assignments:
            for submission in assignment.submissions:
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        if grade.needs_manual_grade:
                            out[(submission.student.id, assignment.name)].append(grade.name)
    return dict(out)


def mark(row: dict, waiting: list[str]) -> dict:
    """The CSV row with its waiting answers' columns emptied and the two manual columns filled."""
    for gid in waiting:
        if gid in row:
            row[gid] = ""
    row["provisional"] = PROVISIONAL if waiting else ""
    row["manual_pending"] = str(len(waiting))
    return row


def waiting_per_assignment(table: list[dict]) -> dict[str, int]:
    """assignment -> how many written answers wait for a grader, from the CSV's rows."""
    counts: Counter = Counter()
    for row in table:
        counts[row["assignment"]] += int(row.get("manual_pending") or 0)
    return dict(counts)


def html_section(table: list[dict]) -> str:
    """The report's section on the written answers."""
    counts = waiting_per_assignment(table)
    provisional = Counter(r["assignment"] for r in table if r.get("provisional") == PROVISIONAL)
    if not any(counts.values()):
        return ("<h2>Written answers</h2><p>No written answer waits for a grader: every total is final.</p>")
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{counts[a]}</td><td>{provisional.get(a, 0)}</td></tr>"
                   for a in sorted(counts))
    return ("<h2>Written answers</h2><p>The written questions are graded by hand: score them in formgrader "
            "(<code>cd</code> into this folder, then <code>jupyter lab</code> or <code>nbgrader formgrader</code>), "
            "then run <code>python -m autograder report</code> on this folder. Until then those totals are "
            "provisional (the column <code>provisional</code> of grades.csv).</p>"
            "<table><tr><th>assignment</th><th>answers waiting</th><th>provisional totals</th></tr>"
            f"{body}</table>")


def summary_lines(table: list[dict]) -> list[str]:
    """One line per assignment with answers waiting, for the terminal."""
    return [f"{a}: {n} written answer{'s wait' if n != 1 else ' waits'} for a grader (those totals are provisional)"
            for a, n in sorted(waiting_per_assignment(table).items()) if n]
