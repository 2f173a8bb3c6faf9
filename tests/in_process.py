"""Student code run in this process, and the verdicts on it: the helpers of the judging tests.

``namespace(...)`` executes notebook cells in a fresh ``__main__``-like namespace, as a
notebook's kernel would (with the notebooks' set-up imports); ``verdicts(...)`` runs every check
of an assignment on it and judges each record on the trusted side, here.
"""

from __future__ import annotations

import builtins

from student_code import points

from autograder import judging
from autograder.course import checker
from autograder.inside import scenarios


def namespace(sources: dict[str, str] | str) -> dict:
    """Execute notebook cells (a setup like the notebooks', the checker cell, then ``sources``) in a fresh namespace."""
    ns = {"__name__": "__main__", "__builtins__": builtins}
    exec("import numpy as np", ns)
    exec(compile(checker.cell_source(), "<checker cell>", "exec"), ns)
    if "torch" in str(sources):
        exec("import torch\nfrom torch import nn", ns)
    for source in [sources] if isinstance(sources, str) else sources.values():
        exec(compile(source, "<student cell>", "exec"), ns)
    return ns


def verdicts(ns: dict, assignment: str, seed: int = 1, source: str = "") -> dict[str, judging.Verdict]:
    """``check -> Verdict`` for every check of ``assignment``, run on ``ns`` with ``seed``."""
    return {check: judging.verdict(check, scenarios.run(check, ns, seed), seed, source) for check in points(assignment)}


def failed(vs: dict[str, judging.Verdict]) -> dict[str, str]:
    """The messages of the checks that failed."""
    return {check: v.message for check, v in vs.items() if not v.passed}
