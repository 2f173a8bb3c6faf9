"""What `grade` prints: the summary table fits 80 columns with every assignment's name whole."""

from __future__ import annotations

from rich.console import Console

from autograder.course.spec import ASSIGNMENTS
from autograder.grading.jobs import STATUSES
from autograder.grading.progress import Summary, print_summary
from autograder.grading.store import Result


def test_the_summary_fits_80_columns_without_cutting_a_name(tmp_path):
    summary = Summary(graded_now=99999, seconds=12345.6)
    summary.results = [Result(f"s{k}", a, status, score=3.0, max_score=12.0)
                       for a in ASSIGNMENTS for k, status in enumerate(STATUSES)]
    console = Console(width=80, record=True, force_terminal=False)
    print_summary(summary, str(tmp_path / "a-rather-long-folder-name" / "grading"), console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    for assignment in ASSIGNMENTS:
        assert any(line.split() and line.split()[0] == assignment for line in lines), assignment
    header = next(line for line in lines if line.split() and line.split()[0] == "assignment")
    assert header.split()[1:] == [*STATUSES, "mean"]
