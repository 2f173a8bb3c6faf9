"""What ``grade`` shows while it runs and when it ends: a progress bar with counts per status, a summary table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autograder.grading.jobs import STATUSES, Status
from autograder.grading.store import Result

__all__ = ["Summary", "ProgressView", "print_summary"]

#: Without a terminal, a plain line after every tenth of the submissions.
_PLAIN_LINES = 10


@dataclass
class Summary:
    """What a run did: counts per status, the notebooks graded, their rate."""

    graded_now: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    results: list[Result] = field(default_factory=list)

    @property
    def notebooks_run(self) -> int:
        """Submissions that were notebooks to run (not missing)."""
        return sum(1 for r in self.results if r.status != Status.MISSING)

    @property
    def per_minute(self) -> float:
        return 60.0 * self.notebooks_run / self.seconds if self.seconds > 0 else 0.0


class ProgressView:
    """A rich progress bar with the counts per status and the ETA (plain lines without a terminal)."""

    def __init__(self, console: Console, total: int, enabled: bool) -> None:
        self.console, self.total, self.enabled = console, total, enabled
        self.counts: dict[str, int] = {}
        self.done = 0
        self.progress = None

    def __enter__(self) -> ProgressView:
        if self.enabled:
            self.progress = Progress(TextColumn("Grading"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
                                     transient=False)
            self.progress.__enter__()
            self.task = self.progress.add_task("grading", total=self.total, counts="")
        self.started = time.monotonic()
        return self

    def advance(self, status: str) -> None:
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        text = " · ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        if self.progress is not None:
            self.progress.update(self.task, advance=1, counts=text)
            every = max(1, self.total // _PLAIN_LINES)
            if not self.console.is_terminal and (self.done == self.total or self.done % every == 0):
                elapsed = time.monotonic() - self.started
                eta = elapsed / self.done * (self.total - self.done)
                self.console.print(f"graded {self.done}/{self.total} ({text}), ETA {eta:.0f} s")

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


def print_summary(summary: Summary, course_dir: str, console: Console) -> None:
    """The table printed at the end of `grade`."""
    rows: dict[str, dict[str, int]] = {}
    scores: dict[str, list[float]] = {}
    for r in summary.results:
        rows.setdefault(r.assignment, {})
        rows[r.assignment][r.status] = rows[r.assignment].get(r.status, 0) + 1
        if r.status != Status.MISSING:
            scores.setdefault(r.assignment, []).append(r.score / r.max_score if r.max_score else 0.0)
    table = Table(title=f"Graded {summary.graded_now} submissions ({summary.notebooks_run} notebooks) in "
                        f"{summary.seconds:.1f} s: {summary.per_minute:.1f} notebooks/minute")
    table.add_column("assignment")
    for status in STATUSES:
        table.add_column(status, justify="right")
    table.add_column("mean score (handed in)", justify="right")
    for assignment in sorted(rows):
        got = scores.get(assignment, [])
        mean = f"{sum(got) / len(got):.0%}" if got else "-"
        table.add_row(assignment, *[str(rows[assignment].get(s, 0)) for s in STATUSES], mean)
    console.print(table)
    if summary.skipped:
        console.print(f"{summary.skipped} submissions were already graded (unchanged): skipped; "
                      "--force grades them again.")
    for error in summary.errors:
        console.print(f"[red]grader error[/red] {error}")
    if summary.errors:
        console.print(f"[red]{len(summary.errors)} submissions were not graded because of grader errors; "
                      "run the same command again to retry them.[/red]")
    root = Path(course_dir)
    console.print(f"Grades: {root / 'grades.csv'}\nReport: {root / 'report.html'}\nFeedback: {root / 'feedback'}/")
