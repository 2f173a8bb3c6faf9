"""``grades.csv`` and the instructor's ``report.html``, rebuilt from the gradebook.

Both are derived data: ``python -m autograder report DIR`` rewrites them at any time from
nbgrader's gradebook (the scores, with any ``manual_score`` a grader set in formgrader) and the
autograder's ``bngrade_result`` table (how each run ended, why, which mistakes were named).

``grades.csv`` has one row per student and assignment::

    student_id, assignment, score, max_score, status, reason, <part>, <part>, ...

``status`` is one of graded, timeout, crashed, memory, malformed, missing; ``reason`` says why
(empty for a clean run); each ``<part>`` column (a graded test cell's id) holds the points that
row earned on that part, empty for a part of another assignment. After ``grade --speed``, a last
column ``speed_vs_nn`` holds each timed ``BatchNorm1d``'s forward+backward time over
``nn.BatchNorm1d``'s (ungraded; :mod:`autograder.output.speed`).

``report.html`` is one self-contained page: the statuses, the score distribution per
assignment and per part, the most common named mistakes across the class (with the judge's
message), the class speed table after ``grade --speed``, and the submissions that did not grade
cleanly, with their reasons.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections import Counter, defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from nbgrader.api import Gradebook

from autograder.grading.jobs import STATUSES, Status
from autograder.grading.store import GradingFolder, write_atomic
from autograder.output import speed

__all__ = ["write_all", "write_csv", "write_html", "rebuild", "rows", "gradebook_scores", "CSV_FIELDS", "SPEED_FIELD"]

CSV_FIELDS = ["student_id", "assignment", "score", "max_score", "status", "reason"]
#: The ungraded column ``grade --speed`` adds: forward+backward time over nn.BatchNorm1d's.
SPEED_FIELD = "speed_vs_nn"


def gradebook_scores(course: GradingFolder) -> dict[tuple[str, str], dict[str, float]]:
    """(student, assignment) -> {grade_id: points} as nbgrader counts them.

    nbgrader's own rule (its ``Grade.score``: a grader's ``manual_score`` overrides the
    ``auto_score``), plus any extra credit, read through its API.
    """
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    with Gradebook(course.db_url) as gb:
        for assignment in gb.assignments:
            for submission in assignment.submissions:
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        points = float(grade.score or 0.0) + float(grade.extra_credit or 0.0)
                        out[(submission.student.id, assignment.name)][grade.name] = points
    return out


def rows(course: GradingFolder) -> tuple[list[dict], list[str]]:
    """The CSV's rows (sorted by assignment, then student) and its part columns.

    With ``--speed`` measurements in the folder, the last column is ``speed_vs_nn``.
    """
    results = course.results()
    speeds = course.speeds()
    scores = gradebook_scores(course)
    part_names: list[str] = []
    out = []
    for (student, assignment), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for gid in r.parts:
            if gid not in part_names:
                part_names.append(gid)
        from_gradebook = scores.get((student, assignment), {})
        parts = {gid: from_gradebook.get(gid, p.get("score", 0.0)) if r.status != Status.MISSING else 0.0
                 for gid, p in r.parts.items()}
        out.append({"student_id": student, "assignment": assignment,
                    "score": _num(sum(parts.values())), "max_score": _num(r.max_score),
                    "status": r.status, "reason": r.reason, **{g: _num(v) for g, v in parts.items()}})
        if speeds:
            out[-1][SPEED_FIELD] = speed.cell_text(speeds.get((student, assignment)))
    if speeds:
        part_names.append(SPEED_FIELD)
    return out, part_names


def _num(x: float) -> str:
    return f"{float(x):g}"


def write_csv(course: GradingFolder) -> Path:
    table, parts = rows(course)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS + parts, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    path = course.root / "grades.csv"
    write_atomic(path, buffer.getvalue())
    return path


# ---------------------------------------------------------------- the HTML report
def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _score_histogram(assignment: str, table: list[dict]) -> str:
    scores = [float(r["score"]) for r in table]
    top = max(float(r["max_score"]) for r in table) or 1.0
    fig = Figure(figsize=(6.5, 2.6))
    ax = fig.subplots()
    ax.hist(scores, bins=min(20, max(5, int(top) + 1)), range=(0, top), color="#3b6ea8", edgecolor="white")
    ax.set_xlabel(f"score (out of {top:g})")
    ax.set_ylabel("students")
    ax.set_title(f"{assignment}: total scores of the {len(scores)} notebooks handed in")
    return _png(fig)


def _parts_chart(assignment: str, table: list[dict], parts: list[str], maxima: dict[str, float]) -> str:
    full, partial, zero = [], [], []
    for gid in parts:
        values = [float(r[gid]) for r in table if r.get(gid, "") != ""]
        n = max(len(values), 1)
        top = maxima.get(gid, 0) or 1.0
        full.append(sum(v >= top for v in values) / n)
        zero.append(sum(v <= 0 for v in values) / n)
        partial.append(1 - full[-1] - zero[-1])
    fig = Figure(figsize=(6.5, 0.35 * len(parts) + 1.2))
    ax = fig.subplots()
    y = range(len(parts))
    ax.barh(y, full, color="#2e7d32", label="full points")
    ax.barh(y, partial, left=full, color="#f9a825", label="partial")
    ax.barh(y, zero, left=[f + p for f, p in zip(full, partial, strict=True)], color="#c62828", label="0 points")
    ax.set_yticks(list(y), parts)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title(f"{assignment}: points per part (share of students)")
    ax.legend(loc="lower right", fontsize=8, frameon=True)
    return _png(fig)


def _mistakes_chart(counter: Counter) -> str:
    common = counter.most_common(12)
    fig = Figure(figsize=(6.5, 0.35 * len(common) + 1.2))
    ax = fig.subplots()
    ax.barh(range(len(common)), [c for _, c in common], color="#8e44ad")
    ax.set_yticks(range(len(common)), [m for m, _ in common])
    ax.invert_yaxis()
    ax.set_xlabel("submissions")
    ax.set_title("Most common named mistakes")
    return _png(fig)


def write_html(course: GradingFolder) -> Path:
    table, parts = rows(course)
    parts = [p for p in parts if p != SPEED_FIELD]
    results = course.results()
    by_assignment: dict[str, list[dict]] = defaultdict(list)
    for row in table:
        by_assignment[row["assignment"]].append(row)
    sections = []
    status_rows = []
    for assignment, group in sorted(by_assignment.items()):
        counts = Counter(r["status"] for r in group)
        handed_in = [r for r in group if r["status"] != Status.MISSING] or group
        scores = [float(r["score"]) for r in handed_in]
        top = max(float(r["max_score"]) for r in group)
        status_rows.append(f"<tr><td>{html.escape(assignment)}</td><td>{len(group)}</td>"
                           + "".join(f"<td>{counts.get(s, 0)}</td>" for s in STATUSES)
                           + f"<td>{sum(scores) / len(scores):.2f} / {top:g}</td></tr>")
        graded = [r for r in group if r["status"] not in (Status.MISSING, Status.MALFORMED)] or group
        mine = [p for p in parts if any(r.get(p, "") != "" for r in group)]
        maxima = {}
        for r in (results[(x["student_id"], assignment)] for x in group):
            for gid, part in r.parts.items():
                maxima[gid] = max(maxima.get(gid, 0.0), float(part.get("max_score", 0.0)))
        charts = _score_histogram(assignment, handed_in)
        if mine:
            charts += _parts_chart(assignment, graded, mine, maxima)
        sections.append(f"<h2>{html.escape(assignment)}</h2>{charts}")
    mistakes: Counter = Counter()
    examples: dict[str, tuple[str, str]] = {}
    for r in results.values():
        named = set()
        for gid, part in r.parts.items():
            name = part.get("mistake")
            if name and not part.get("passed"):
                examples.setdefault(name, (f"{r.assignment} / {gid}", part.get("message", "")))
                named.add(name)
        mistakes.update(named)  # once per submission
    if mistakes:
        mistake_rows = "".join(
            f"<tr><td>{html.escape(m)}</td><td>{n}</td><td>{html.escape(examples[m][0])}</td>"
            f"<td style='white-space: pre-wrap'>{html.escape(examples[m][1])}</td></tr>"
            for m, n in mistakes.most_common())
        mistakes_html = (_mistakes_chart(mistakes) + "<table><tr><th>mistake</th><th>submissions</th>"
                         "<th>first seen in</th><th>what students were told</th></tr>" + mistake_rows + "</table>")
    else:
        mistakes_html = "<p>No named mistake was found.</p>"
    trouble = [r for r in table if r["status"] != Status.GRADED or r["reason"]]
    trouble_html = ("<table><tr><th>student</th><th>assignment</th><th>status</th><th>score</th><th>reason</th></tr>"
                    + "".join(f"<tr><td>{html.escape(r['student_id'])}</td><td>{html.escape(r['assignment'])}</td>"
                              f"<td>{html.escape(r['status'])}</td><td>{r['score']} / {r['max_score']}</td>"
                              f"<td>{html.escape(r['reason'])}</td></tr>" for r in trouble)
                    + "</table>") if trouble else "<p>Every submission ran cleanly.</p>"
    status_heads = "".join(f"<th>{s}</th>" for s in STATUSES)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Grading report</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border-bottom: 1px solid #ddd; padding: .3rem .6rem;
text-align: left; vertical-align: top; }} img {{ max-width: 100%; display: block; margin: .5rem 0; }}
</style></head><body>
<h1>Grading report</h1>
<p>{len(table)} submissions in <code>{html.escape(str(course.root))}</code>. Scores come from the gradebook
(a grader's manual score overrides the autograder's).</p>
<table><tr><th>assignment</th><th>students</th>{status_heads}<th>mean score (handed in)</th></tr>
{''.join(status_rows)}</table>
{''.join(sections)}
{_speed_html(course)}
<h2>Most common named mistakes</h2>
{mistakes_html}
<h2>Submissions that did not grade cleanly</h2>
{trouble_html}
</body></html>
"""
    path = course.root / "report.html"
    write_atomic(path, page)
    return path


def _speed_html(course: GradingFolder) -> str:
    """The class speed table (``grade --speed``), fastest first; empty without measurements."""
    entries = course.speeds()
    if not entries:
        return ""
    timed = sorted(((k, e) for k, e in entries.items() if e.get("ratio") is not None), key=lambda kv: kv[1]["ratio"])
    untimed = sorted((k, e) for k, e in entries.items() if e.get("ratio") is None)
    shape = next(iter(entries.values())).get("shape", list(speed.SHAPE))
    body = "".join(
        f"<tr><td>{i}</td><td>{html.escape(s)}</td><td>{html.escape(a)}</td><td>{e['ratio']:.2f}×</td>"
        f"<td>{'' if e.get('forward_ratio') is None else format(e['forward_ratio'], '.2f') + '×'}</td>"
        f"<td>{'' if e.get('seconds') is None else format(e['seconds'] * 1e3, '.2f') + ' ms'}</td>"
        f"<td>{html.escape(e.get('message', ''))}</td></tr>" for i, ((s, a), e) in enumerate(timed, 1))
    body += "".join(f"<tr><td></td><td>{html.escape(s)}</td><td>{html.escape(a)}</td><td>—</td><td></td><td></td>"
                    f"<td>{html.escape(e.get('message', ''))}</td></tr>" for (s, a), e in untimed)
    return (f"<h2>Class speed table (ungraded)</h2><p>Each correct <code>BatchNorm1d</code> timed against "
            f"<code>nn.BatchNorm1d</code> side by side in its grading sandbox, float32, one thread, a batch of "
            f"shape {html.escape(' × '.join(str(n) for n in shape))}: time over PyTorch's (lower is faster). "
            "The figure comes from the student's own process, so it is for interest, never for marks.</p>"
            "<table><tr><th>#</th><th>student</th><th>assignment</th><th>forward+backward</th><th>forward</th>"
            f"<th>time</th><th>note</th></tr>{body}</table>")


def write_all(course: GradingFolder) -> tuple[Path, Path]:
    """Rewrite grades.csv and report.html from the gradebook."""
    return write_csv(course), write_html(course)


def rebuild(directory: str) -> tuple[Path, Path]:
    """``python -m autograder report DIR``."""
    course = GradingFolder(directory)
    if not course.db_path.exists():
        raise FileNotFoundError(f"{course.db_path} does not exist: is {directory} a folder made by "
                                "`python -m autograder grade`?")
    if not course.results():
        raise ValueError(f"{course.db_path} holds no graded submission yet")
    return write_all(course)

