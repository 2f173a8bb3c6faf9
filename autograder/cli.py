"""``python -m autograder``: the instructor's command line.

Every subcommand has ``--help``. To add one, write ``_add_<name>(subparsers)`` that registers
its parser with ``set_defaults(run=<function taking the parsed args, returning an exit code>)``
and list it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

__all__ = ["main", "build_parser", "COMMANDS"]


def _add_release(sub: argparse._SubParsersAction) -> None:
    from autograder.release import ASSIGNMENTS

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
    from autograder.release import ReleaseError, release

    try:
        paths = release(args.assignments or None, output=args.output, db_url=args.db, url=args.book_url)
    except (ReleaseError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"released {path}")
    return 0


#: The subcommands, in the order ``--help`` lists them.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_release]


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
