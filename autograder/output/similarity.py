"""Similar submissions, for the instructor: near-copies of each other or of the reference solution.

Information, never a verdict: nothing here changes a score. For each assignment the code a
student wrote (the solution cells, where the graded names live) is fingerprinted with
`copydetect <https://github.com/blingenf/copydetect>`_ (winnowed k-grams of the token stream, with
every name, string and number made alike, so renamed variables and edited comments do not hide
a copy), after removing what every student receives: the stubs of the released notebook (the
signatures and docstrings) are ``copydetect``'s boilerplate. Each pair of submissions and each
submission against the instructor's solution gets a similarity: the larger of the two shares of
each one's fingerprinted code found in the other (1 for a copy, 0 for nothing in common). Pairs
at or above :data:`THRESHOLD` go into ``report.html``.

On the course's own correct alternatives (tests/student_code.py) honest solutions score at
most about 0.2 against each other and the reference, copies with renamed variables 1.0.
"""

from __future__ import annotations

import html
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.grading.jobs import Status
from autograder.grading.store import GradingFolder
from autograder.notebook import nbgrader_meta

__all__ = ["THRESHOLD", "NOISE", "GUARANTEE", "Match", "Similarity", "written_code", "compare", "for_class",
           "html_section"]

#: Similarity (0..1) from which a pair is listed.
THRESHOLD = 0.6
#: copydetect's k-gram length (its noise threshold: shorter matches are ignored) and the length
#: from which a match is guaranteed to be found; its defaults.
NOISE, GUARANTEE = 25, 30


@dataclass(frozen=True)
class Match:
    """Two submissions (or one and ``"the reference solution"``) and their similarity."""

    first: str
    second: str
    similarity: float


@dataclass
class Similarity:
    """One assignment's similar submissions.

    Attributes:
        assignment: the assignment.
        compared: how many submissions were compared.
        pairs: the pairs of students at or above the threshold, most similar first.
        near_reference: the students whose code is at or above it against the reference.
    """

    assignment: str
    compared: int = 0
    pairs: list[Match] = field(default_factory=list)
    near_reference: list[Match] = field(default_factory=list)


def written_code(nb) -> str:
    """The code of a notebook's solution cells (the graded names), joined."""
    return "\n\n".join(str(c.get("source", "")) for c in nb.cells
                       if c.get("cell_type") == "code" and nbgrader_meta(c).get("solution"))


def _fingerprint(code: str, boilerplate: list[int]):
    from copydetect import CodeFingerprint  # noqa: PLC0415 - pygments and pyplot: only when a report is written

    return CodeFingerprint("submission.py", NOISE, GUARANTEE - NOISE + 1, boilerplate=boilerplate,
                           fp=io.StringIO(code), language="python")


def _similarity(a, b) -> float:
    from copydetect import compare_files  # noqa: PLC0415 - see _fingerprint

    if not a.hashes or not b.hashes:
        return 0.0
    _, (s1, s2), _ = compare_files(a, b)
    return float(max(s1, s2))


def compare(assignment: str, codes: dict[str, str], reference: str, stubs: str,
            threshold: float = THRESHOLD) -> Similarity:
    """The similar pairs among ``codes`` (student -> code) and against ``reference``.

    Args:
        assignment: for the result's label.
        codes: each student's code (:func:`written_code`).
        reference: the instructor's solution code.
        stubs: the released notebook's solution cells, whose fingerprints are ignored.
        threshold: the similarity from which a pair is listed. Default: :data:`THRESHOLD`
    """
    boilerplate = sorted(_fingerprint(stubs, []).hashes)
    prints = {student: _fingerprint(code, boilerplate) for student, code in sorted(codes.items())}
    ref = _fingerprint(reference, boilerplate)
    out = Similarity(assignment, compared=len(prints))
    for (a, fa), (b, fb) in itertools.combinations(prints.items(), 2):
        s = _similarity(fa, fb)
        if s >= threshold:
            out.pairs.append(Match(a, b, s))
    for student, fp in prints.items():
        s = _similarity(fp, ref)
        if s >= threshold:
            out.near_reference.append(Match(student, "the reference solution", s))
    out.pairs.sort(key=lambda m: -m.similarity)
    out.near_reference.sort(key=lambda m: -m.similarity)
    return out


def _solution_code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    lines = [line for line in written_code(nb).splitlines()
             if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line]
    return "\n".join(lines)


def for_class(course: GradingFolder, threshold: float = THRESHOLD) -> list[Similarity]:
    """Every assignment of the grading folder: its submissions as handed in, compared.

    A notebook that cannot be read (malformed, missing) is left out; it is no evidence of anything.
    """
    by_assignment: dict[str, dict[str, str]] = {}
    for (student, assignment), r in course.results().items():
        if r.status in (Status.MISSING, Status.MALFORMED):
            continue
        try:
            nb = nbformat.read(course.submitted(student, assignment), as_version=4)
        except Exception:  # noqa: BLE001 - an unreadable notebook is compared with nothing
            continue
        by_assignment.setdefault(assignment, {})[student] = written_code(nb)
    out = []
    for assignment, codes in sorted(by_assignment.items()):
        source = course.solutions / assignment / f"{assignment}.ipynb"
        released = course.root / "release" / assignment / f"{assignment}.ipynb"
        if not source.exists() or not released.exists():
            continue
        stubs = written_code(nbformat.read(released, as_version=4))
        out.append(compare(assignment, codes, _solution_code(source), stubs, threshold))
    return out


def html_section(found: list[Similarity], threshold: float = THRESHOLD) -> str:
    """The report's section: the similar pairs, per assignment."""
    intro = ("<h2>Similar submissions (information, not a verdict)</h2><p>The code students wrote in the "
             "solution cells, compared by <code>copydetect</code> (names, strings and numbers made alike, the "
             f"released stubs ignored): each pair with a similarity of {threshold:.0%} or more, and each "
             "submission that close to the reference solution. A high similarity is a reason to read both "
             "notebooks, nothing more; it changes no score.</p>")
    body = []
    for s in found:
        rows = [(m.first, m.second, m.similarity) for m in s.pairs + s.near_reference]
        if not rows:
            body.append(f"<p><strong>{html.escape(s.assignment)}</strong>: no pair among {s.compared} submissions.</p>")
            continue
        body.append(f"<h3>{html.escape(s.assignment)}</h3><table><tr><th>submission</th><th>similar to</th>"
                    "<th>similarity</th></tr>" + "".join(
                        f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{x:.0%}</td></tr>"
                        for a, b, x in rows) + "</table>")
    return intro + ("".join(body) if body else "<p>No submission to compare.</p>")
