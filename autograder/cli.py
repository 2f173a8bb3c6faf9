"""``python -m autograder``: the instructor's commands (each has ``--help``)."""

from __future__ import annotations

import argparse
import sys

from .submissions import DEFAULT_ID_PATTERN


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def add_grade(subparsers) -> None:
    p = subparsers.add_parser(
        "grade", help="grade a class's submissions: grades.csv, feedback, report, gradebook",
        description="Grade every submission in SUBMISSIONS, each in its own sandbox, and write into DIR: "
                    "grades.csv, feedback/<student>/<assignment>.html, report.html and the nbgrader "
                    "gradebook (DIR is an nbgrader course folder: `nbgrader export` and formgrader work "
                    "there). Rerunning the same command grades only what is left.",
        epilog="SUBMISSIONS is nbgrader's layout (<student_id>/<assignment>/<assignment>.ipynb), a zip "
               "downloaded from an LMS (one notebook per student; the student id comes from each file's "
               f"name through --id-pattern, default {DEFAULT_ID_PATTERN!r}: Canvas's "
               "'doejane_12345_67890_x.ipynb' gives 'doejane'), or a single notebook.")
    p.add_argument("submissions", metavar="SUBMISSIONS", help="folder, .zip or .ipynb")
    p.add_argument("--out", required=True, metavar="DIR", help="where grades, feedback, report and gradebook go")
    p.add_argument("--assignment", metavar="NAME", help="grade only this assignment (required for a zip)")
    p.add_argument("--workers", type=_positive(int), metavar="N",
                   help="notebooks graded at once on this machine (default: its CPU cores)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="grade on this Dask distributed cluster instead, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--timeout", type=_positive(float), default=30.0, metavar="S",
                   help="seconds a cell may run before it is interrupted (default: 30)")
    p.add_argument("--notebook-timeout", type=_positive(float), metavar="S",
                   help="seconds a whole notebook may run (default: 10 x --timeout)")
    p.add_argument("--memory", type=_positive(int), default=3072, metavar="MB",
                   help="memory each notebook may use, in MiB (default: 3072)")
    p.add_argument("--force", action="store_true", help="grade again what is already graded")
    p.add_argument("--id-pattern", metavar="REGEX",
                   help="regular expression with a group 'student' for ids in a zip's file names")
    p.add_argument("--student", metavar="ID", help="the student id of a single notebook")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_grade)


def _grade(args) -> int:
    from rich.console import Console

    from .grade import GradeOptions, grade, print_summary
    from .sandbox import SandboxError
    from .submissions import SubmissionsError

    console = Console(stderr=True)
    options = GradeOptions(args.submissions, args.out, args.assignment, args.workers, args.scheduler,
                           args.timeout, args.notebook_timeout, args.memory, args.force, args.id_pattern,
                           args.student, not args.no_progress)
    try:
        summary = grade(options, console)
    except (SubmissionsError, SandboxError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    if summary.graded_now or summary.errors:
        print_summary(summary, args.out, console)
    return 1 if summary.errors else 0


def add_report(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="rebuild grades.csv and report.html from a grading folder's gradebook",
        description="Rewrite DIR/grades.csv and DIR/report.html from DIR's gradebook, e.g. after grading by "
                    "hand in formgrader (a manual score overrides the autograder's).")
    p.add_argument("dir", metavar="DIR", help="a folder made by `python -m autograder grade --out DIR`")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from .report import rebuild

    try:
        csv_path, html_path = rebuild(args.dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Grades: {csv_path}\nReport: {html_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_grade(sub)
    add_report(sub)
    args = parser.parse_args(argv)
    return args.func(args)
