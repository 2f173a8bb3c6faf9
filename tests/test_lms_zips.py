"""End to end: a class as Canvas and Moodle hand it over, graded as an instructor would.

Names in several scripts each keep their own grade, resubmissions grade the LMS's latest file
and say so, a notebook with large saved outputs is graded, two students claiming one id stop
the run with an error naming both files, and the grades come out in each LMS's import format.
The terminal shows nothing but the grader's own lines, 80 columns wide.
"""

from __future__ import annotations

import csv
import hashlib

import pytest
from student_code import automatic_full_marks, points, written_points

from autograder.synthetic import load_expected, make_lms_zips

pytestmark = pytest.mark.slow

A = "bn-numpy-forward"


@pytest.fixture(scope="module")
def lms_class(tmp_path_factory, released):
    root = tmp_path_factory.mktemp("lms")
    make_lms_zips(root / "zips", released)
    return root


def _rows(out):
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def _only_our_lines(stderr: str) -> list[str]:
    """The lines of `stderr` that are not the grader's own (third-party warnings, tracebacks, long lines)."""
    return [line for line in stderr.splitlines()
            if "Warning" in line or "site-packages" in line or "Traceback" in line or len(line) > 80
            or "…" in line]


def _check(rows, expected):
    problems = []
    for e in expected:
        row = rows.get(e.student)
        if row is None:
            problems.append(f"{e.name}: no row {e.student!r}")
            continue
        score = float(row["score"])
        want = automatic_full_marks(row) if e.score == "full" else float(e.score)
        if (row["status"], score, row["name"], row["lms_id"]) != (e.status, want, e.name, e.lms_id):
            problems.append(f"{e.name}: got {row['status']} {score} {row['name']!r} {row['lms_id']!r}")
        if e.reason and e.reason not in row["reason"]:
            problems.append(f"{e.name}: reason {row['reason']!r} lacks {e.reason!r}")
    return problems


def _run(lms_class, *args):
    from grade_runs import run_grade

    return run_grade([*args, "--assignment", A, "--timeout", "10", "--workers", "2", "--no-progress"],
                     lms_class / "grades", lms_class / "scratch")


def test_canvas_zip_every_student_keeps_their_own_grade(lms_class):
    run = _run(lms_class, lms_class / "zips" / "canvas.zip", "--lms", "canvas")
    assert run.returncode == 0, run.stderr[-4000:]
    assert not _only_our_lines(run.stderr), run.stderr[-4000:]
    rows = _rows(run.out)
    assert not _check(rows, load_expected(lms_class / "zips", "canvas")), _check(rows, load_expected(
        lms_class / "zips", "canvas"))
    with open(run.out / "canvas.csv", newline="", encoding="utf-8") as f:
        canvas = list(csv.DictReader(f))
    assert list(canvas[0])[:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    # the assignment's points, the written answers' included; a score before they are graded
    assert canvas[0]["Student"] == "Points Possible"
    assert float(canvas[0][A]) == sum(points(A).values()) + sum(written_points(A).values())
    by_id = {r["ID"]: r for r in canvas[1:]}
    assert set(by_id) == {e.lms_id for e in load_expected(lms_class / "zips", "canvas")}
    zoe = next(r for r in rows.values() if r["lms_id"] == "101")
    assert (by_id["101"]["Student"], float(by_id["101"][A])) == ("zoë", automatic_full_marks(zoe))
    assert (by_id["102"]["Student"], float(by_id["102"][A])) == ("zoé", 0.0)
    page = (run.out / "feedback" / "李雷" / f"{A}.html").read_text(encoding="utf-8")
    assert "<strong>李雷</strong>" in page


def test_moodle_zip_grades_the_latest_file_and_keeps_the_canvas_grades(lms_class):
    before = _rows(lms_class / "grades")
    run = _run(lms_class, lms_class / "zips" / "moodle.zip", "--lms", "moodle")
    assert run.returncode == 0, run.stderr[-4000:]
    assert not _only_our_lines(run.stderr), run.stderr[-4000:]
    rows = _rows(run.out)
    assert not _check(rows, load_expected(lms_class / "zips", "moodle"))
    assert rows["zoë"]["score"] == before["zoë"]["score"] == "12"  # graded from the other zip: kept
    with open(run.out / f"moodle-{A}.csv", newline="", encoding="utf-8") as f:
        moodle = {r["Identifier"]: r for r in csv.DictReader(f)}
    assert moodle["Participant 4243"]["Full name"] == "Chloé Dupont"
    assert float(moodle["Participant 4243"]["Grade"]) == 12.0 and moodle["Participant 4243"]["Last modified (grade)"]
    assert "Chloé Dupont" in (run.out / "report.html").read_text(encoding="utf-8")  # its reason: the file graded


def test_two_students_claiming_one_id_stop_the_run_naming_both_files(lms_class):
    csv_before = hashlib.sha256((lms_class / "grades" / "grades.csv").read_bytes()).hexdigest()
    run = _run(lms_class, lms_class / "zips" / "collision.zip")
    assert run.returncode == 2
    assert f"zoe_201_1_{A}.ipynb" in run.stderr and f"zoe_202_2_{A}.ipynb" in run.stderr
    assert "zoe" not in _rows(run.out)
    assert hashlib.sha256((run.out / "grades.csv").read_bytes()).hexdigest() == csv_before
