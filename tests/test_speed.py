"""``grade --speed``: the ungraded class speed table (each correct BatchNorm1d timed against nn.BatchNorm1d).

One small bn-torch class is graded once with ``--speed`` (the ``speed_class`` fixture): a
correct student, the same code slowed down by a sleep in ``forward``, a wrong backward pass,
and a layer that is right on the hidden tests' small batches but wrong at the timing shape.
"""

from __future__ import annotations

import copy
import csv
import json
import sqlite3

import nbformat
import pytest
from grade_runs import run_grade
from student_code import ROOT

from autograder.inside import timing
from autograder.inside.protocol import CellEnd
from autograder.output import speed
from autograder.sandbox import RunResult
from autograder.synthetic import correct_notebook, wrong_notebook

SHAPE = "4096,64"


def _subclass(nb, body: str):
    """`nb` with a cell after its last solution cell that redefines BatchNorm1d as a subclass."""
    nb = copy.deepcopy(nb)
    last = max(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    nb.cells.insert(last + 1, nbformat.v4.new_code_cell("import time\n\nclass BatchNorm1d(BatchNorm1d):\n" + body))
    return nb


@pytest.fixture(scope="module")
def speed_class(tmp_path_factory, released):
    root = tmp_path_factory.mktemp("speed")
    rel = nbformat.read(released["bn-torch"], as_version=4)
    sol = nbformat.read(ROOT / "solutions" / "bn-torch" / "bn-torch.ipynb", as_version=4)
    good = correct_notebook(rel, sol)
    notebooks = {
        "alice": good,
        "bob": wrong_notebook(rel, "dx_missing_mean_path", "bn-torch"),
        "carol": _subclass(good, "    def forward(self, x):\n        time.sleep(0.02)\n"
                                 "        return super().forward(x)\n"),
        "dave": _subclass(good, "    def forward(self, x):\n        y = super().forward(x)\n"
                                "        return y * 0 if x.shape[0] >= 4096 else y\n"),
    }
    for student, nb in notebooks.items():
        path = root / "class" / student / "bn-torch" / "bn-torch.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
    run = run_grade([root / "class", "--speed", "--speed-shape", SHAPE, "--workers", "2", "--timeout", "20"],
                    root / "grades", root / "scratch")
    assert run.returncode == 0, run.stderr[-4000:]
    return root, run


def _speeds(out) -> dict[str, dict]:
    with sqlite3.connect(out / "gradebook.db") as db:
        return {s: json.loads(e) for s, e in db.execute("SELECT student_id, entry FROM bngrade_speed")}


def _csv(out) -> dict[str, dict]:
    with open(out / "grades.csv", newline="") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def test_a_correct_kernel_is_timed_against_nn_batchnorm1d(speed_class):
    root, _ = speed_class
    alice = _speeds(root / "grades")["alice"]
    assert alice["ratio"] > 0 and alice["forward_ratio"] > 0 and alice["shape"] == [4096, 64], alice
    assert alice["seconds"] == pytest.approx(alice["ratio"] * alice["reference_seconds"])
    assert alice["spread"] >= 0


def test_a_slower_kernel_gets_a_larger_ratio(speed_class):
    root, _ = speed_class
    entries = _speeds(root / "grades")
    # a 20 ms sleep per forward call against a few ms of work: a wide margin on any machine
    assert entries["carol"]["ratio"] > 2 * entries["alice"]["ratio"], entries


def test_a_wrong_kernel_is_not_timed_and_says_which_check_failed(speed_class):
    root, _ = speed_class
    bob = _speeds(root / "grades")["bob"]
    assert bob["ratio"] is None and "module_backward" in bob["message"], bob


def test_a_kernel_wrong_only_at_the_timing_shape_is_not_timed(speed_class):
    root, _ = speed_class
    dave = _speeds(root / "grades")["dave"]
    assert dave["ratio"] is None and "differs from nn.BatchNorm1d" in dave["message"], dave
    assert _csv(root / "grades")["dave"]["score"] == "19", "the hidden tests use small batches: dave's grade is full"


def test_speed_never_changes_a_score(speed_class):
    root, _ = speed_class
    rows = _csv(root / "grades")
    assert rows["alice"]["score"] == rows["carol"]["score"] == "19" and rows["bob"]["score"] != "19"


def test_the_csv_has_an_ungraded_speed_column(speed_class):
    root, _ = speed_class
    rows = _csv(root / "grades")
    assert list(rows["alice"])[-5:] == ["speed_vs_nn", "provisional", "manual_pending", "name", "lms_id"]
    assert float(rows["alice"]["speed_vs_nn"]) > 0 and float(rows["carol"]["speed_vs_nn"]) > 0
    assert rows["bob"]["speed_vs_nn"] == "" and rows["dave"]["speed_vs_nn"] == ""


def test_the_report_has_a_class_speed_table_fastest_first(speed_class):
    root, _ = speed_class
    page = (root / "grades" / "report.html").read_text()
    assert "Class speed table (ungraded)" in page and "4096 × 64" in page
    table = page[page.index("Class speed table"):]
    assert table.index("alice") < table.index("carol"), "fastest first"
    assert "module_backward" in table, "an untimed student is listed with the reason"


def test_the_feedback_tells_the_student_their_speed(speed_class):
    root, _ = speed_class
    alice = (root / "grades" / "feedback" / "alice" / "bn-torch.html").read_text()
    bob = (root / "grades" / "feedback" / "bob" / "bn-torch.html").read_text()
    assert "Speed (ungraded)" in alice and "× the time of" in alice
    assert "Speed (ungraded): not timed" in bob


def test_the_speed_run_leaves_nothing_behind(speed_class):
    _, run = speed_class
    assert run.leftovers == [] and run.stray_files == []


def test_rerunning_with_speed_is_a_no_op(speed_class, tmp_path):
    root, _ = speed_class
    run = run_grade([root / "class", "--speed", "--speed-shape", SHAPE, "--workers", "2"], root / "grades",
                    tmp_path / "scratch")
    assert run.returncode == 0 and "Nothing to grade" in run.stderr, run.stderr[-2000:]


def _run(stdout: str, finished: bool = True) -> RunResult:
    return RunResult(cells={0: CellEnd(0, []),
                            1: CellEnd(1, [{"output_type": "stream", "name": "stdout", "text": stdout}])},
                     started=True, finished=finished)


@pytest.mark.parametrize("forged", ['{"ratio": -1}', '{"ratio": NaN}', '{"ratio": "fast"}', "not json",
                                    '{"ratio": Infinity}'])
def test_a_forged_or_broken_timing_line_is_not_a_speed(forged):
    entry = speed.parse(_run(speed.MARKER + forged + "\n"))
    assert entry["ratio"] is None and entry["message"].startswith("not timed")


def test_the_last_timing_line_counts(forged="BNGRADE-SPEED {\"ratio\": 0.001}\n"):
    good = speed.MARKER + json.dumps({"ratio": 1.5, "forward_ratio": 1.2, "message": ""}) + "\n"
    entry = speed.parse(_run(forged + good))
    assert entry["ratio"] == 1.5 and entry["forward_ratio"] == 1.2


def test_a_timing_run_that_did_not_finish_is_not_timed():
    entry = speed.parse(_run(speed.MARKER + '{"ratio": 1.0}\n', finished=False))
    assert entry["ratio"] is None and "did not finish" in entry["message"]


def test_the_speed_shape_option_is_checked():
    from autograder.cli import main

    with pytest.raises(SystemExit):
        main(["grade", "x", "--out", "y", "--speed-shape", "1,64"])


def test_the_sandbox_timing_keeps_the_harness_rules():
    from bnlib.bench import core

    assert (timing.SPREAD_LIMIT, timing.LOAD_MARGIN) == (core.SPREAD_LIMIT, core.LOAD_MARGIN)


def test_the_sandbox_timing_reports_medians_and_their_spread(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        timing.measure(torch.nn.BatchNorm1d, shape=(256, 16), min_run_time=0.01, rounds=3)
    finally:
        torch.set_num_threads(threads)
    (line,) = [t for t in capsys.readouterr().out.splitlines() if t.startswith(timing.MARKER)]
    entry = json.loads(line[len(timing.MARKER):])
    assert entry["seconds"] == pytest.approx(entry["ratio"] * entry["reference_seconds"])
    assert entry["spread"] >= 0
    assert entry["message"] == timing.noise_note(entry["spread"], None, None) or entry["message"].startswith(
        "uncertain: the machine was loaded")


def test_a_doubtful_timing_says_why_in_its_message():
    assert timing.noise_note(0.05, load_before=0.3, cores=2) == ""
    loaded = timing.noise_note(0.05, load_before=3.0, cores=2)
    assert "loaded" in loaded and "3.0 on 2 cores" in loaded
    assert "the rounds differ by 40%" in timing.noise_note(0.4, load_before=None, cores=2)


def test_the_spread_is_kept_and_a_negative_one_is_refused():
    good = {"ratio": 1.5, "forward_ratio": 1.2, "seconds": 0.003, "reference_seconds": 0.002, "spread": 0.07}
    assert speed.parse(_run(speed.MARKER + json.dumps(good) + "\n"))["spread"] == 0.07
    bad = speed.parse(_run(speed.MARKER + json.dumps({**good, "spread": -1}) + "\n"))
    assert bad["ratio"] is None and "spread is -1" in bad["message"]
