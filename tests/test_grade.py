"""`python -m autograder grade` on the synthetic class: the right outcome for every kind of student.

The class (see :mod:`autograder.synthetic`) is graded once per session by one command in a
subprocess (the ``graded_class`` fixture); each test checks one behaviour on the result.
"""

from __future__ import annotations

import csv
import html
import json
import os
import sqlite3
import subprocess
import sys

import nbformat
import pytest
from student_code import automatic_full_marks, written_points

from autograder.course.spec import ASSIGNMENTS
from autograder.grading.store import GradingFolder
from autograder.paths import REPO_DIR

pytestmark = pytest.mark.slow


def _rows(run) -> dict[tuple[str, str], dict]:
    with open(run.out / "grades.csv", newline="") as f:
        return {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}


def _failures(graded_class, check) -> list[str]:
    run, expected = graded_class
    rows = _rows(run)
    problems = []
    for e in expected:
        row = rows.get((e.student, e.assignment))
        if row is None:
            problems.append(f"{e.student}/{e.assignment}: no row in grades.csv")
            continue
        problem = check(e, row)
        if problem:
            problems.append(f"{e.student}/{e.assignment}: {problem} (status {row['status']}, score "
                            f"{row['score']}/{row['max_score']}, reason {row['reason']!r})")
    return problems


def test_the_run_grades_the_whole_class_in_one_command(graded_class):
    run, expected = graded_class
    assert run.returncode == 0
    assert len(_rows(run)) == len(expected)


def test_every_student_gets_the_expected_status(graded_class):
    problems = _failures(graded_class, lambda e, row: None if row["status"] == e.status
                         else f"status should be {e.status}")
    assert not problems, "\n".join(problems)


def test_every_student_gets_the_expected_score(graded_class):
    def check(e, row):
        score, top = float(row["score"]), automatic_full_marks(row)
        if top <= 0:
            return "max_score is 0"
        if e.score == "full" and score != top:
            return "should have full marks"
        if e.score == 0 and score != 0:
            return "should score 0"
        if e.score == "partial" and not 0 < score < top:
            return "should score more than 0 and less than full marks"
        return None

    problems = _failures(graded_class, check)
    assert not problems, "\n".join(problems)


def test_hostile_and_odd_runs_say_why_in_the_reason(graded_class):
    problems = _failures(graded_class, lambda e, row: None if e.reason.lower() in row["reason"].lower()
                         else f"the reason should mention {e.reason!r}")
    assert not problems, "\n".join(problems)


def test_a_clean_run_has_no_reason(graded_class):
    def check(e, row):
        clean = e.student.startswith(("correct", "blank", "wrong")) and e.status == "graded"
        return "a clean run should have no reason" if clean and row["reason"] else None

    problems = _failures(graded_class, check)
    assert not problems, "\n".join(problems)


def test_each_wrong_variant_is_named_in_the_results_and_the_feedback(graded_class):
    run, expected = graded_class
    results = GradingFolder(run.out).results()
    problems = []
    for e in expected:
        if e.mistake is None:
            continue
        r = results[(e.student, e.assignment)]
        if e.mistake not in r.mistakes:
            problems.append(f"{e.student}: named {r.mistakes}, not {e.mistake}")
        page = (run.out / "feedback" / e.student / f"{e.assignment}.html").read_text()
        from autograder.course.mistakes import by_name

        if html.escape(by_name(e.mistake).title) not in page:
            problems.append(f"{e.student}: the feedback does not name {by_name(e.mistake).title!r}")
    assert not problems, "\n".join(problems)


def test_the_csv_has_the_points_of_every_part_and_they_add_up(graded_class):
    run, expected = graded_class
    with open(run.out / "grades.csv", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        rows = list(reader)
    assert header[:6] == ["student_id", "assignment", "score", "max_score", "status", "reason"]
    assert header[-4:] == ["provisional", "manual_pending", "name", "lms_id"]
    columns = header[6:-4]  # the rest are the parts
    for row in rows:
        parts = [p for p in columns if row[p] != ""]
        assert parts, row
        assert abs(sum(float(row[p]) for p in parts) - float(row["score"])) < 1e-9, row
    solution_parts = {}
    for a in ASSIGNMENTS:
        nb = nbformat.read(REPO_DIR / "solutions" / a / f"{a}.ipynb", as_version=4)
        solution_parts[a] = {c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader["points"] for c in nb.cells
                             if c.metadata.get("nbgrader", {}).get("grade")}
    for row in rows:
        parts = {p for p in columns if row[p] != ""}
        waiting = set(written_points(row["assignment"])) if row["provisional"] == "yes" else set()
        assert parts == set(solution_parts[row["assignment"]]) - waiting, row["student_id"]
        assert int(row["manual_pending"]) == len(waiting), row["student_id"]
        assert float(row["max_score"]) == sum(solution_parts[row["assignment"]].values())
    # Nobody has graded the written answers yet: a notebook whose answers were written waits for a
    # grader (the correct students typed in the model answers); answers left as released score 0 at once.
    by_row = {(r["student_id"], r["assignment"]): r for r in rows}
    correct = [by_row[(e.student, e.assignment)] for e in expected
               if e.student.startswith("correct-") and e.status == "graded"]
    assert correct and all(r["provisional"] == "yes" for r in correct)
    for row in rows:
        if row["provisional"] != "yes" and row["status"] == "graded":
            assert all(float(row[w]) == 0 for w in written_points(row["assignment"])), row["student_id"]


def test_every_row_has_a_feedback_page(graded_class):
    run, expected = graded_class
    missing = [f"{e.student}/{e.assignment}" for e in expected
               if not (run.out / "feedback" / e.student / f"{e.assignment}.html").is_file()]
    assert not missing


def _hidden_tests() -> list[str]:
    """The code of every hidden test region in the instructor's notebooks."""
    regions = []
    for a in ASSIGNMENTS:
        nb = nbformat.read(REPO_DIR / "solutions" / a / f"{a}.ipynb", as_version=4)
        for cell in nb.cells:
            if "BEGIN HIDDEN TESTS" in cell.source:
                inside = cell.source.split("BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS")[0]
                regions += [line.strip() for line in inside.split("\n")[1:] if line.strip()]
    assert regions
    return regions


def test_feedback_shows_no_hidden_test_code_and_no_traceback_through_it(graded_class):
    run, _ = graded_class
    hidden = _hidden_tests()
    leaks = []
    for page in (run.out / "feedback").rglob("*.html"):
        text = html.unescape(page.read_text())
        for line in hidden:
            if line in text:
                leaks.append(f"{page.relative_to(run.out)}: {line}")
        for marker in ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "/sandbox/lib/autograder/inside/probe.py",
                       "autograder/inside/scenarios/", "autograder/judging/"):
            if marker in text:
                leaks.append(f"{page.relative_to(run.out)}: {marker}")
    assert not leaks, "\n".join(leaks[:20])


def test_feedback_shows_every_failed_part_with_its_message(graded_class):
    run, expected = graded_class
    results = GradingFolder(run.out).results()
    problems = []
    for e in expected:
        r = results[(e.student, e.assignment)]
        page = (run.out / "feedback" / e.student / f"{e.assignment}.html").read_text()
        for gid, part in r.parts.items():
            if not part.get("passed") and part.get("message"):
                if html.escape(part["message"].split("\n")[0]) not in page:
                    problems.append(f"{e.student}: {gid}'s message is not in the feedback")
        if html.escape(r.reason) not in page:
            problems.append(f"{e.student}: the reason is not in the feedback")
    assert not problems, "\n".join(problems[:20])


def test_the_report_plots_the_class_and_lists_the_common_mistakes(graded_class):
    run, expected = graded_class
    page = (run.out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 7  # per assignment: scores and parts; the mistakes
    for name in {e.mistake for e in expected if e.mistake}:
        assert name in page
    for status in ("timeout", "crashed", "memory", "malformed", "missing"):
        assert f"<td>{status}</td>" in page


def test_nbgrader_export_reads_the_gradebook(graded_class, tmp_path):
    run, expected = graded_class
    bindir = os.path.dirname(sys.executable)
    target = tmp_path / "export.csv"
    proc = subprocess.run([os.path.join(bindir, "nbgrader"), "export", "--to", str(target)], cwd=run.out,
                          capture_output=True, text=True, env={**os.environ, "PATH": bindir + ":" + os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(target, newline="") as f:
        exported = {(r["student_id"], r["assignment"]): float(r["score"]) for r in csv.DictReader(f)}
    ours = _rows(run)
    for key, row in ours.items():
        if row["status"] != "missing":
            assert exported[key] == float(row["score"]), key


def test_graded_notebooks_are_in_nbgrader_layout_for_formgrader(graded_class):
    run, expected = graded_class
    for e in expected:
        path = run.out / "autograded" / e.student / e.assignment / f"{e.assignment}.ipynb"
        if e.status in ("missing", "malformed"):
            assert not path.exists()
        else:
            nb = nbformat.read(path, as_version=4)
            assert any(c.metadata.get("nbgrader", {}).get("grade") for c in nb.cells)
    assert (run.out / "source" / "bn-torch" / "bn-torch.ipynb").is_file()
    assert (run.out / "release" / "bn-torch" / "bn-torch.ipynb").is_file()


def test_the_machine_is_left_as_it_was(graded_class):
    run, _ = graded_class
    assert run.leftovers == [], "processes still running after grading"
    assert run.stray_files == [], "files left outside the output folder"
    from autograder.sandbox import running_sandboxes

    assert running_sandboxes() == []


def test_the_gradebook_survives_the_student_who_wrote_to_it(graded_class):
    run, _ = graded_class
    with sqlite3.connect(run.out / "gradebook.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        students = {r[0] for r in db.execute("SELECT id FROM student")}
    assert "hostile-write_gradebook" in students
    assert b"all full marks" not in (run.out / "gradebook.db").read_bytes()


def test_the_solutions_are_untouched(graded_class, solutions_digest):
    from autograder.grading.store import tree_sha256
    from autograder.paths import SOLUTIONS

    assert tree_sha256(SOLUTIONS) == solutions_digest


def test_progress_and_a_summary_table_are_shown(graded_class):
    run, expected = graded_class
    total = len(expected)
    assert f"graded {total}/{total}" in run.stderr and "ETA" in run.stderr
    assert "notebooks/minute" in run.stderr
    for status in ("graded", "timeout", "crashed", "memory"):
        assert status in run.stderr


def test_a_finished_run_rerun_is_a_no_op(graded_class, tmp_path):
    from grade_runs import run_grade

    run, expected = graded_class
    before = {p: p.stat().st_mtime_ns for p in [run.out / "grades.csv", run.out / "gradebook.db",
                                                 run.out / "report.html"]}
    results = GradingFolder(run.out).results()
    again = run_grade([run.out.parent / "class" / "submitted", "--timeout", "5"], run.out, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Nothing to grade" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert GradingFolder(run.out).results() == results
    assert again.leftovers == [] and again.stray_files == []


def test_expected_json_describes_the_class(synthetic_class):
    root, expected = synthetic_class
    on_disk = json.loads((root / "class" / "expected.json").read_text())
    assert len(on_disk) == len(expected)
    kinds = {e.student.split("-")[0] for e in expected}
    assert kinds == {"correct", "blank", "wrong", "hostile", "malformed", "missing"}


def test_grading_one_late_notebook_keeps_the_rest_of_the_class(graded_class, tmp_path):
    import shutil

    from grade_runs import run_grade

    run, _ = graded_class
    course_dir = tmp_path / "grades"
    shutil.copytree(run.out, course_dir)
    before = GradingFolder(course_dir).results()
    late = tmp_path / "late-student.ipynb"
    late.write_bytes((run.out / "submitted" / "correct-bn-numpy-forward" / "bn-numpy-forward" /
                      "bn-numpy-forward.ipynb").read_bytes())
    again = run_grade([late, "--assignment", "bn-numpy-forward", "--no-progress"], course_dir, tmp_path / "s")
    assert again.returncode == 0, again.stderr
    after = GradingFolder(course_dir).results()
    assert {k: v for k, v in after.items() if k[0] != "late-student"} == before
    assert (after[("late-student", "bn-numpy-forward")].status, after[("late-student", "bn-numpy-forward")].score) \
        == ("graded", 12.0)


def test_the_report_lists_copies_of_the_solution_as_information_only(graded_class):
    run, _ = graded_class
    page = (run.out / "report.html").read_text()
    section = page.split("Similar submissions (information, not a verdict)")[1].split("<h2>")[0]
    assert "correct-bn-numpy-forward</td><td>the reference solution" in section
    assert "blank-bn-numpy-forward<" not in section  # the released stubs alone are no similarity
    rows = _rows(run)
    assert rows[("correct-bn-numpy-forward", "bn-numpy-forward")]["score"] == "12"  # and no score changes
