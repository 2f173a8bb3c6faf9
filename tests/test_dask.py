"""`grade --scheduler ADDRESS`: the same grading on a Dask distributed cluster (here a LocalCluster)."""

from __future__ import annotations

import csv

import pytest
from grade_runs import run_grade
from student_code import automatic_full_marks

from autograder.synthetic import make_class

pytestmark = pytest.mark.slow


def test_grading_on_a_dask_cluster_gives_every_student_the_expected_outcome(tmp_path, released):
    import dask
    from distributed import LocalCluster

    expected = make_class(tmp_path / "class", ["bn-numpy-forward"], released=released, hostile=False)
    expected = [e for e in expected if e.assignment == "bn-numpy-forward"]
    folder = str(tmp_path / "dask")
    settings = {"temporary-directory": folder}
    with dask.config.set(settings), LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                 dashboard_address=None, local_directory=folder) as cluster:
        run = run_grade([tmp_path / "class" / "submitted", "--scheduler", cluster.scheduler_address,
                         "--timeout", "10", "--no-progress"], tmp_path / "grades", tmp_path / "scratch")
        ran_on_cluster = sum(v.all_durations.get("compute", 0.0) for k, v in cluster.scheduler.task_prefixes.items()
                             if k.startswith("bngrade-"))
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "grades" / "grades.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {e.student for e in expected}
    for e in expected:
        row = rows[e.student]
        assert row["status"] == e.status, e.student
        score, top = float(row["score"]), automatic_full_marks(row)
        assert {"full": score == top, 0: score == 0, "partial": 0 < score < top}[e.score], e.student
    assert ran_on_cluster > 0, "the notebooks were not graded by the cluster's workers"
    assert run.leftovers == [] and run.stray_files == []


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, released):
    make_class(tmp_path / "class", ["bn-numpy-forward"], released=released, wrong=False, hostile=False)
    run = run_grade([tmp_path / "class" / "submitted", "--scheduler", "tcp://127.0.0.1:9", "--no-progress"],
                    tmp_path / "grades", tmp_path / "scratch", timeout=120)
    assert run.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in " ".join(run.stderr.split())
