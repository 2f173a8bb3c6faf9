"""nbgrader's configuration for this course.

``python -m autograder`` loads it; nbgrader's own commands take it from the repository root:

    nbgrader generate_assignment bn-torch --force --NbGrader.config_file=autograder/nbgrader_config.py
    nbgrader autograde bn-torch --NbGrader.config_file=autograder/nbgrader_config.py

Layout (relative to the repository root, the course root): the instructor's source notebooks
in ``solutions/<assignment>/``; everything nbgrader makes under ``_build/`` (git-ignored): the
student versions in ``_build/release/``, collected submissions in ``_build/submitted/``, graded
copies in ``_build/autograded/``, feedback in ``_build/feedback/`` and the gradebook
``_build/gradebook.db``.

Links to the course book: the notebooks link chapters as ``book:<chapter>``; the release
rewrites them to ``<book URL>/book/<chapter>.html`` when a book URL is set (``html.baseurl``
in ``_config.yml``, or the environment variable ``BN_BOOK_URL``), and otherwise leaves the
link's text (the chapter's title) as plain text (see ``autograder/nbgrader_ext/release.py``).
"""

import os

from autograder.course.spec import COURSE_ID

c = get_config()  # noqa: F821  (nbgrader's config loader defines it)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

c.CourseDirectory.course_id = COURSE_ID
c.CourseDirectory.root = ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = os.path.join("_build", "release")
c.CourseDirectory.submitted_directory = os.path.join("_build", "submitted")
c.CourseDirectory.autograded_directory = os.path.join("_build", "autograded")
c.CourseDirectory.feedback_directory = os.path.join("_build", "feedback")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, "_build", "gradebook.db")

# What students get in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Autograding: a cell may run at most two minutes; graded cells a student deleted come back;
# a duplicated graded cell no longer stops the whole assignment (see autograder/nbgrader_ext/preprocessors.py).
c.Execute.timeout = 120
c.OverwriteCells.add_missing_cells = True
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "autograder.nbgrader_ext.preprocessors.DeduplicateCells",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "autograder.nbgrader_ext.preprocessors.RestoreCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# Feedback shows the docstring of each hidden test, never its code.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
