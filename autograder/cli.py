"""``python -m autograder``: the instructor's command line.

Every subcommand has ``--help``. To add one, write ``_add_<name>(subparsers)`` that registers
its parser with ``set_defaults(run=<function taking the parsed args, returning an exit code>)``
and list it in :data:`COMMANDS`.

``--help`` imports nothing heavy: each command imports what it runs (nbgrader, rich, the
judge) when it runs, in the ``_run_<name>`` functions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from autograder.course.spec import ASSIGNMENTS
from autograder.grading.submissions import DEFAULT_ID_PATTERN, SubmissionsError
from autograder.inside.timing import SHAPE
from autograder.sandbox import Limits, SandboxError

__all__ = ["main", "build_parser", "COMMANDS"]


def _add_release(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "release",
        help="generate the student notebooks from solutions/",
        description=(
            "Generate the student version of each assignment with nbgrader: solutions become "
            "stubs, hidden tests are removed, test cells are locked, and the gradebook learns "
            "the graded cells. Writes _build/release/<assignment>/<assignment>.ipynb."
        ),
    )
    p.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help=f"default: all ({', '.join(ASSIGNMENTS)})")
    p.add_argument("--output", metavar="DIR", help="release directory (default: _build/release)")
    p.add_argument("--db", metavar="URL", help="nbgrader gradebook URL (default: sqlite:///_build/gradebook.db)")
    p.add_argument(
        "--book-url",
        metavar="URL",
        help="public URL of the course book, for chapter links (default: $BN_BOOK_URL, or html.baseurl in _config.yml)",
    )
    p.set_defaults(run=_run_release)


def _run_release(args: argparse.Namespace) -> int:
    from autograder.nbgrader_ext.release import ReleaseError, release  # noqa: PLC0415 - nbgrader: not for --help

    try:
        paths = release(args.assignments or None, output=args.output, db_url=args.db, url=args.book_url)
    except (ReleaseError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"released {path}")
    return 0


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _shape(text: str) -> tuple[int, int]:
    try:
        n, c = (int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,C (two positive integers), got {text!r}") from None
    if n < 2 or c < 1:
        raise argparse.ArgumentTypeError(f"N must be at least 2 and C at least 1, got {text!r}")
    return n, c


def _add_grade(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grade",
        help="grade a class's submissions: grades.csv, feedback, report, gradebook",
        description=(
            "Grade every submission in SUBMISSIONS, each in its own sandbox, and write into DIR: "
            "grades.csv, feedback/<student>/<assignment>.html, report.html and the nbgrader "
            "gradebook (DIR is an nbgrader course folder: `nbgrader export` and formgrader work "
            "there). Run the same command again after an interruption: it grades only what is left."
        ),
        epilog=(
            "SUBMISSIONS is nbgrader's layout (<student_id>/<assignment>/<assignment>.ipynb), a zip "
            "downloaded from an LMS (one notebook per student; the student id comes from each file's "
            f"name through --id-pattern, default {DEFAULT_ID_PATTERN!r}: Canvas's "
            "'doejane_12345_67890_bn-numpy-forward.ipynb' gives 'doejane'), or a single notebook."
        ),
    )
    p.add_argument("submissions", metavar="SUBMISSIONS", help="a folder, a .zip or a .ipynb")
    p.add_argument("--out", required=True, metavar="DIR", help="where grades, feedback, report and gradebook go")
    p.add_argument("--assignment", metavar="NAME", help="grade only this assignment (required for a zip)")
    p.add_argument("--workers", type=_positive(int), metavar="N",
                   help="notebooks graded at once on this machine (default: its CPU cores)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="grade on this Dask distributed cluster instead, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--timeout", type=_positive(float), default=Limits.cell_timeout, metavar="S",
                   help="seconds a cell may run before it is interrupted (default: %(default)g)")
    p.add_argument("--notebook-timeout", type=_positive(float), metavar="S",
                   help=f"seconds a whole notebook may run (default: {Limits.NOTEBOOK_FACTOR} x --timeout)")
    p.add_argument("--memory", type=_positive(int), default=Limits.memory // 2**20, metavar="MB",
                   help="memory each notebook may use, in MiB (default: %(default)d)")
    p.add_argument("--force", action="store_true", help="grade again what is already graded")
    p.add_argument("--id-pattern", metavar="REGEX",
                   help="regular expression with a group 'student' that finds the student id in a zip's file names")
    p.add_argument("--student", metavar="ID", help="the student id of a single notebook (default: its file name)")
    p.add_argument("--speed", action="store_true",
                   help="also time each correct bn-torch BatchNorm1d against nn.BatchNorm1d (ungraded: "
                        "the column speed_vs_nn in grades.csv, a class speed table in the report)")
    p.add_argument("--speed-shape", type=_shape, metavar="N,C", default=None,
                   help=f"the batch --speed times (default: {SHAPE[0]},{SHAPE[1]})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_grade)


def _run_grade(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415 - not for --help (see the module docstring)

    from autograder.grading.coordinator import GradeError, GradeOptions, grade, print_summary  # noqa: PLC0415 - ditto

    console = Console(stderr=True)
    options = GradeOptions(submissions=args.submissions, out=args.out, assignment=args.assignment,
                           workers=args.workers, scheduler=args.scheduler, timeout=args.timeout,
                           notebook_timeout=args.notebook_timeout, memory_mb=args.memory, force=args.force,
                           id_pattern=args.id_pattern, student=args.student, progress=not args.no_progress,
                           speed=args.speed or bool(args.speed_shape), speed_shape=args.speed_shape)
    try:
        summary = grade(options, console)
    except (SubmissionsError, SandboxError, GradeError) as exc:
        console.print(f"error: {exc}", highlight=False, markup=False, style="red")
        return 2
    if summary.graded_now or summary.errors:
        print_summary(summary, args.out, console)
    return 1 if summary.errors else 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild grades.csv and report.html from a grading folder's gradebook",
        description=(
            "Rewrite DIR/grades.csv and DIR/report.html from DIR's gradebook, e.g. after grading by "
            "hand in formgrader (a grader's manual score overrides the autograder's)."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="a folder made by `python -m autograder grade --out DIR`")
    p.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from autograder.output.report import rebuild  # noqa: PLC0415 - nbgrader, matplotlib: not for --help

    try:
        csv_path, html_path = rebuild(args.dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Grades: {csv_path}\nReport: {html_path}")
    return 0


#: The subcommands, in the order ``--help`` lists them.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_release, _add_grade, _add_report]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autograder",
        description="Release, grade and report on the batch normalization course's notebooks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)
