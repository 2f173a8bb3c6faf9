"""A grading run killed with kill -9 resumes: nothing lost, nothing counted twice, nothing left running."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
import uuid

import nbformat
import pytest
from grade_runs import environment, grade_command, leftovers, run_grade, stray_files

from autograder.grading.store import GradingFolder
from autograder.synthetic import make_class

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slow_class(tmp_path_factory, released):
    """13 students of bn-numpy-forward whose notebooks each take a second (so a run can be cut)."""
    root = tmp_path_factory.mktemp("resume")
    expected = make_class(root / "class", ["bn-numpy-forward"], released=released, wrong=False, hostile=False,
                          copies=6)
    for path in (root / "class" / "submitted").rglob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell("import time\ntime.sleep(1)"))
        nbformat.write(nb, path)
    return root, expected


def _rows(out) -> dict:
    """(status, score, seconds, graded_at) per row: graded_at tells a row graded again from one kept."""
    return {k: (r.status, r.score, r.seconds, r.graded_at) for k, r in GradingFolder(out).results().items()}


def test_kill_9_in_the_middle_then_the_same_command_grades_only_what_is_left(slow_class, tmp_path):
    root, expected = slow_class
    out = tmp_path / "grades"
    args = [root / "class" / "submitted", "--workers", "1", "--timeout", "10", "--no-progress"]
    marker = uuid.uuid4().hex
    env, cwd = environment(tmp_path / "first", marker)
    proc = subprocess.Popen(grade_command(args, out), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(out / "gradebook.db") as db:
                done = db.execute("SELECT COUNT(*) FROM bngrade_result WHERE status != 'missing'").fetchone()[0]
        except sqlite3.Error:
            done = 0
        if done >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert leftovers(marker) == [], "the workers and sandboxes of a killed run must go away"
    before = _rows(out)
    assert 3 <= len([k for k, v in before.items() if v[0] != "missing"]) < len(expected)

    resumed = run_grade(args, out, tmp_path / "second")
    assert resumed.returncode == 0, resumed.stderr
    after = _rows(out)
    assert set(after) == {(e.student, e.assignment) for e in expected}
    # what was graded before the kill was not graded again
    assert {k: after[k] for k in before} == before
    for e in expected:
        status, score, *_ = after[(e.student, e.assignment)]
        assert status == e.status
        assert (score == 12) if e.score == "full" else (score == 0), e.student
    with sqlite3.connect(out / "gradebook.db") as db:
        submissions = db.execute("SELECT student_id, COUNT(*) FROM submitted_assignment GROUP BY student_id").fetchall()
        grades = db.execute("SELECT COUNT(*) FROM grade").fetchone()[0]
    graded_cells = sum(1 for c in nbformat.read(out / "release" / "bn-numpy-forward" / "bn-numpy-forward.ipynb",
                                                 as_version=4).cells if c.metadata.get("nbgrader", {}).get("grade"))
    assert all(n == 1 for _, n in submissions)
    assert grades == graded_cells * len(submissions)  # one grade per graded cell and submission, never two
    assert resumed.leftovers == [] and resumed.stray_files == []
    assert stray_files(tmp_path / "first") == []

    again = run_grade(args, out, tmp_path / "third")
    assert "Nothing to grade" in again.stderr
    assert _rows(out) == after

    time.sleep(1.1)  # graded_at has the database clock's second resolution
    forced = run_grade([*args[:-1], "--force", "--workers", "2"], out, tmp_path / "fourth")
    assert forced.returncode == 0, forced.stderr
    regraded = _rows(out)
    assert {k: v[:2] for k, v in regraded.items()} == {k: v[:2] for k, v in after.items()}
    # every row was written again (a duration alone can repeat: a timeout lasts as long each time)
    assert all(regraded[k][3] > after[k][3] for k in after if after[k][0] != "missing")
