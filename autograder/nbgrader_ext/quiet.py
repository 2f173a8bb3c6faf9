"""Keeping nbgrader's own warnings off the instructor's terminal.

nbgrader 0.9.6's gradebook (``nbgrader/api.py``) builds ``SubmittedAssignment`` and
``SubmittedNotebook`` objects that SQLAlchemy's autoflush sees before they are in the session,
and SQLAlchemy says so with an ``SAWarning`` ("Object of type <SubmittedAssignment> not in
session, add operation along 'Assignment.submissions' will not proceed") for every submission
saved: a screenful before the progress bar. The cause is inside nbgrader (the objects are added
right after, and the grades are saved), so here they are filtered where they arise, and only
there: an ``SAWarning`` raised from any other module, ours included, still shows.
"""

from __future__ import annotations

import warnings

from sqlalchemy.exc import SAWarning

__all__ = ["quiet_gradebook"]


def quiet_gradebook() -> None:
    """Ignore SQLAlchemy's ``SAWarning`` raised from nbgrader's modules, in this process."""
    warnings.filterwarnings("ignore", category=SAWarning, module=r"nbgrader(\.|$)")
