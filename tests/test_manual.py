"""autograder.output.manual: the written answers, graded by hand, from `grade` to formgrader to `report`.

One small class (two students of ``bn-numpy-forward``) is graded by the real command; a grader
then scores the written answers through nbgrader's gradebook API, as formgrader does, and
``python -m autograder report`` rebuilds the grades.
"""

from __future__ import annotations

import csv
import subprocess
import sys

import nbformat
import pytest
from grade_runs import run_grade
from student_code import fill, solution_sources

from autograder.paths import REPO_DIR

pytestmark = pytest.mark.slow

ASSIGNMENT = "bn-numpy-forward"


def _written(released) -> dict[str, float]:
    nb = nbformat.read(released, as_version=4)
    return {c.metadata.nbgrader["grade_id"]: float(c.metadata.nbgrader["points"]) for c in nb.cells
            if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")}


def _rows(folder) -> dict[str, dict]:
    with open(folder / "grades.csv", newline="") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def graded(released, tmp_path_factory):
    """Two students, right code and the model answers, graded by `python -m autograder grade`."""
    root = tmp_path_factory.mktemp("manual")
    nb = nbformat.read(released[ASSIGNMENT], as_version=4)
    filled = fill(nb, {**solution_sources(ASSIGNMENT), **solution_sources(ASSIGNMENT, "markdown")})
    for student in ("ada", "bob"):
        folder = root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(filled, folder / f"{ASSIGNMENT}.ipynb")
    run = run_grade([root / "submitted", "--no-progress", "--workers", "1"], root / "grades", root / "scratch")
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "grades", _written(released[ASSIGNMENT])


def test_written_answers_wait_for_a_grader_and_the_total_is_provisional(graded):
    folder, written = graded
    assert len(written) >= 2
    rows = _rows(folder)
    for row in rows.values():
        assert row["status"] == "graded", row
        assert row["provisional"] == "yes" and row["manual_pending"] == str(len(written)), row
        assert all(row[gid] == "" for gid in written), row  # no 0 that nobody gave
        assert float(row["score"]) == 12.0  # the automatic checks, all passed
        assert float(row["max_score"]) == 12.0 + sum(written.values())
    page = (folder / "report.html").read_text()
    assert "Written answers" in page and "answers waiting" in page


def test_the_gradebook_lists_the_written_answers_for_formgrader(graded):
    from nbgrader.api import Gradebook

    folder, written = graded
    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gb:
        for student in ("ada", "bob"):
            grades = {g.name: g for g in gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student).grades}
            for gid in written:
                assert grades[gid].needs_manual_grade and grades[gid].auto_score is None
            assert not any(g.needs_manual_grade for name, g in grades.items() if name not in written)


def test_the_feedback_page_says_the_written_answers_wait(graded):
    folder, _ = graded
    page = (folder / "feedback" / "ada" / f"{ASSIGNMENT}.html").read_text()
    assert "wait for a grader" in page and "provisional" in page


def test_report_after_grading_by_hand_counts_the_scores_and_clears_the_mark(graded, tmp_path):
    import shutil

    from nbgrader.api import Gradebook

    folder = tmp_path / "grades"
    shutil.copytree(graded[0], folder)
    written = graded[1]
    first, second = sorted(written)
    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gb:  # what formgrader's API does
        for student, scores in (("ada", {first: 2.0, second: 1.0}), ("bob", {first: 1.5})):
            for gid, score in scores.items():
                grade = gb.find_grade(gid, ASSIGNMENT, ASSIGNMENT, student)
                grade.manual_score = score
                grade.needs_manual_grade = False
        gb.db.commit()
    proc = subprocess.run([sys.executable, "-m", "autograder", "report", str(folder)], capture_output=True,
                          text=True, cwd=REPO_DIR, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{ASSIGNMENT}: 1 written answer waits for a grader" in proc.stdout  # bob's second answer
    rows = _rows(folder)
    ada, bob = rows["ada"], rows["bob"]
    assert (ada["provisional"], ada["manual_pending"], float(ada["score"])) == ("", "0", 15.0)
    assert (float(ada[first]), float(ada[second])) == (2.0, 1.0)
    assert (bob["provisional"], bob["manual_pending"], float(bob["score"])) == ("yes", "1", 13.5)
    assert (float(bob[first]), bob[second]) == (1.5, "")
