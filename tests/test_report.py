"""`python -m autograder report DIR`: grades.csv and report.html rebuilt from the gradebook."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest

from autograder.paths import REPO_DIR


def _report(directory) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder", "report", str(directory)], cwd=REPO_DIR,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_a_manual_score_in_the_gradebook_shows_in_the_rebuilt_csv(graded_class, tmp_path):
    from nbgrader.api import Gradebook

    run, _ = graded_class
    copy = tmp_path / "grades"
    shutil.copytree(run.out, copy)
    (copy / "grades.csv").unlink()
    (copy / "report.html").unlink()
    student, assignment = "blank-bn-numpy-forward", "bn-numpy-forward"
    with Gradebook(f"sqlite:///{copy / 'gradebook.db'}") as gb:
        grade = gb.find_grade("running_mean", assignment, assignment, student)
        grade.manual_score = 1.0  # a grader's override in formgrader
        gb.db.commit()
    proc = _report(copy)
    assert proc.returncode == 0, proc.stderr
    with open(copy / "grades.csv", newline="") as f:
        rows = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    assert rows[(student, assignment)]["running_mean"] == "1"
    assert rows[(student, assignment)]["score"] == "1"
    with open(run.out / "grades.csv", newline="") as f:
        original = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    assert {k: v for k, v in rows.items() if k != (student, assignment)} == \
           {k: v for k, v in original.items() if k != (student, assignment)}
    assert "data:image/png" in (copy / "report.html").read_text()


def test_report_on_a_folder_that_was_never_graded_is_a_clear_error(tmp_path):
    proc = _report(tmp_path)
    assert proc.returncode == 2
    assert "gradebook.db does not exist" in proc.stderr
