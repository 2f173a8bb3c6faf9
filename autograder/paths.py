"""Where the course's files are: the one definition of the repository's folders."""

from __future__ import annotations

from pathlib import Path

#: The repository's root (this checkout).
REPO_DIR = Path(__file__).resolve().parent.parent
#: The autograder package itself.
PACKAGE_DIR = REPO_DIR / "autograder"
#: The instructor's nbgrader source notebooks, one folder per assignment.
SOLUTIONS = REPO_DIR / "solutions"
#: nbgrader's configuration for the course.
NBGRADER_CONFIG = PACKAGE_DIR / "nbgrader_config.py"
#: Everything the course builds (release, book, gradebook), git-ignored.
BUILD_DIR = REPO_DIR / "_build"
