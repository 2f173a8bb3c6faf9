"""No answer leaks: what students are given holds no graded function's implementation.

The detector (``tests/leaks.py``) compares name-agnostic k-gram fingerprints of every answer
(the instructor's solution and ``bnlib``'s implementation of each graded name) with every
piece of code students can read. These tests first show that it can fail, on copies made
here and on the instructor edition of the book, then run it over everything the student
edition publishes (its pages, ``_sources/``, downloads) and over the released notebooks.
"""

from __future__ import annotations

import ast
import io
import keyword
import tokenize

import leaks
import pytest

from autograder.course.spec import COURSE


@pytest.fixture(scope="module")
def detector() -> leaks.Detector:
    return leaks.course_detector()


def renamed(code: str) -> str:
    """``code`` as a student who copied it would hand it in: every local name renamed, comments and blank lines gone."""
    tree = ast.parse(code)
    local = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    local |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
    tokens = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            continue
        if tok.type == tokenize.NAME and tok.string in local and not keyword.iskeyword(tok.string):
            tok = tok._replace(string=f"my_{tok.string}_{len(tok.string)}")
        tokens.append(tok)
    text = tokenize.untokenize(tokens)
    return "\n".join(line for line in text.splitlines() if line.strip())


def test_every_answer_is_long_enough_to_be_recognised(detector):
    names = {(a.assignment, a.name) for a in detector.answers}
    assert names == {(a.name, n) for a in COURSE for n in a.names}, "an answer is missing"
    for answer, prints in zip(detector.answers, detector._prints, strict=True):
        assert prints.token_coverage >= leaks.K, f"{answer.origin}: too little code to fingerprint"


def test_a_renamed_copy_without_comments_is_flagged(detector):
    for answer in detector.answers:
        copy = leaks.Document("a copy", renamed(answer.code))
        assert copy.code != answer.code
        found = [leak for leak in detector.leaks([copy]) if leak.answer == answer and leak.where == "a copy"]
        assert found, f"a renamed copy of {answer.name} ({answer.origin}) was not flagged"


def test_an_answer_spread_over_two_blocks_is_flagged_together(detector):
    answer = next(a for a in detector.answers if a.origin.startswith("bnlib.numpy:forward_train"))
    lines = answer.code.splitlines()
    halves = [leaks.Document("first half", "\n".join(lines[: len(lines) // 2])),
              leaks.Document("second half", "\n".join(lines[len(lines) // 2:]))]
    coverages = {where: c for a, where, c in detector.coverages(halves) if a == answer}
    assert coverages["all documents together"] >= detector.threshold
    assert coverages["all documents together"] > max(coverages[w] for w in coverages if w != "all documents together")


def test_the_released_stubs_and_single_lines_are_not_leaks(detector):
    assert detector.leaks([leaks.Document("the stubs", leaks.starter_code())]) == []
    for answer in detector.answers:
        longest = max(answer.code.splitlines(), key=len)
        assert detector.leaks([leaks.Document("one line", longest)]) == [], \
            f"one line of {answer.name} ({longest.strip()!r}) counts as a leak: the threshold is too low"


def test_a_chapter_that_calls_bnlib_and_checks_numbers_is_not_a_leak(detector):
    cell = """
x = np.array([[1, 2, 0], [3, 2, 10], [5, 2, -4], [7, 2, 2]], dtype=np.float64)
gamma, beta = np.array([2.0, 1.0, 0.5]), np.array([1.0, -1.0, 0.0])
y, cache = forward_train(x, gamma, beta, eps=1e-5)
np.testing.assert_allclose(y.mean(axis=0), beta, atol=1e-12)
dx, dgamma, dbeta = backward_compact(np.ones_like(y), cache)
np.testing.assert_allclose(dx.sum(axis=0), 0, atol=1e-12)
"""
    assert detector.leaks([leaks.Document("a worked example", cell)]) == []


@pytest.mark.slow
def test_the_instructor_edition_is_flagged(instructor_build, detector):
    assert instructor_build.returncode == 0, instructor_build.log[-4000:]
    flagged = {leak.answer.name for leak in detector.leaks(leaks.site_documents(instructor_build.html))}
    assert {"bn_forward_train", "bn_backward_staged", "bn_backward_compact", "BatchNormFunction"} <= flagged, flagged


@pytest.mark.slow
def test_the_student_edition_publishes_no_answer(book_build, detector):
    assert book_build.returncode == 0, book_build.log[-4000:]
    documents = leaks.site_documents(book_build.html)
    published = {d.where for d in documents}
    for needed in ("book/backward.html", "_sources/book/backward.md", "_sources/book/backward.ipynb"):
        assert needed in published, f"the site publishes {needed}, but the detector did not read it"
    assert any(w.startswith("_downloads/") and w.endswith(".ipynb") for w in published), \
        "the student notebooks the site links to were not read"
    found = detector.leaks(documents)
    assert not found, "the student edition publishes answers:\n" + "\n".join(map(str, found))


@pytest.mark.slow
def test_the_released_notebooks_hold_no_answer(released, detector):
    documents = [doc for path in released.values() for doc in leaks.notebook_documents(path, path.name)]
    assert len(documents) > 30
    found = detector.leaks(documents)
    assert not found, "the released notebooks hold answers:\n" + "\n".join(map(str, found))
