"""The whole pipeline with nbgrader: release, fill, autograde, read the grades and the feedback.

One module-scoped fixture grades every submission of every assignment with plain
``nbgrader autograde`` (the probe in local mode), in parallel processes: the instructor's
solutions, two other correct implementations, each known mistake (grouped: mistakes whose
failing checks do not overlap share a notebook), blank notebooks, and notebooks with deleted,
duplicated or edited graded cells.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from grading import autograde
from student_code import (
    ALTERNATIVES,
    ASSIGNMENTS,
    DELEGATING,
    GROUPS,
    ROOT,
    VARIANT,
    VARIANTS,
    fill,
    group_sources,
    points,
    solution_notebook,
    solution_sources,
)

from autograder.course.mistakes import CHAPTERS, MISTAKES, by_name
from autograder.nbgrader_ext.release import rewrite_book_links

pytestmark = pytest.mark.slow


def _released(release: Path, assignment: str):
    return nbformat.read(release / assignment / f"{assignment}.ipynb", as_version=4)


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _submissions(release: Path, assignment: str) -> dict[str, object]:
    released = _released(release, assignment)
    subs = {"solution": fill(released, solution_sources(assignment)), "blank": copy.deepcopy(released)}
    for k, alternative in enumerate(ALTERNATIVES[assignment]):
        subs[f"alternative-{k + 1}"] = fill(released, alternative)
    for k, keys in enumerate(GROUPS[assignment]):
        subs[f"mistakes-{k}"] = fill(released, group_sources(assignment, keys))
    if assignment == "bn-numpy-forward":
        right = subs["solution"]
        deleted = copy.deepcopy(right)
        deleted.cells = [c for c in deleted.cells if _grade_id(c) not in ("forward_eval_output", "running_mean")]
        subs["deleted-cells"] = deleted
        duplicated = copy.deepcopy(right)
        for grade_id in ("running_mean", "solution_bn_forward_eval"):
            i = next(k for k, c in enumerate(duplicated.cells) if _grade_id(c) == grade_id)
            twin = copy.deepcopy(duplicated.cells[i])
            twin["id"] = f"copy-of-{i}"
            duplicated.cells.insert(i + 1, twin)
        subs["duplicated-cells"] = duplicated
        edited = fill(released, group_sources(assignment, GROUPS[assignment][0]))
        for cell in edited.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if (meta.get("grade") and cell.cell_type == "code") or _grade_id(cell) == "test_forward_train_by_hand":
                cell.source = "print('all good')"
        subs["edited-test-cells"] = edited
        _, sources, _ = DELEGATING["bnlib"]
        subs["delegating"] = fill(released, {**solution_sources(assignment), **sources})
    return subs


@pytest.fixture(scope="module")
def graded(student_release, tmp_path_factory):
    """``{assignment: {student: Graded}}``, and nbgrader validate's output on the solutions."""
    work = tmp_path_factory.mktemp("autograde")
    jobs = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs["validate"] = pool.submit(
            subprocess.run,
            [str(Path(sys.executable).parent / "nbgrader"), "validate"]
            + [str(ROOT / "solutions" / a / f"{a}.ipynb") for a in ASSIGNMENTS],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        )
        for assignment in ASSIGNMENTS:
            subs = _submissions(student_release, assignment)
            names = list(subs)
            # bn-torch notebooks take longest: two processes share them
            parts = [names[0::2], names[1::2]] if assignment == "bn-torch" else [names]
            for k, part in enumerate(parts):
                jobs[(assignment, k)] = pool.submit(
                    autograde, student_release, assignment, {n: subs[n] for n in part}, work / f"{assignment}-{k}"
                )
        results: dict[str, dict] = {a: {} for a in ASSIGNMENTS}
        for key, job in jobs.items():
            if key != "validate":
                results[key[0]].update(job.result())
        results["validate"] = jobs["validate"].result()
    yield results
    shutil.rmtree(work, ignore_errors=True)


def _max(assignment: str) -> float:
    return sum(points(assignment).values())


# --------------------------------------------------------------------------------------------
# The released notebooks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_released_notebook_holds_no_hidden_test(student_release, assignment):
    released = _released(student_release, assignment)
    hidden = {_grade_id(c): c for c in released.cells
              if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c.cell_type == "code"}
    assert set(hidden) == set(points(assignment))
    for cell in hidden.values():
        assert "HIDDEN" not in cell.source and "autograder" not in cell.source and "check(" not in cell.source
        assert cell.source.startswith('"""Check') and cell.source.strip().endswith('"""')
    text = nbformat.writes(released)
    assert "autograder.inside.probe" not in text and "BEGIN HIDDEN TESTS" not in text


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_released_notebook_holds_no_solution_code(student_release, assignment):
    released = _released(student_release, assignment)
    assert "BEGIN SOLUTION" not in nbformat.writes(released) and "END SOLUTION" not in nbformat.writes(released)
    # where nbgrader could leave a solution: the solution cells and the graded cells
    text = "\n".join(c.source for c in released.cells
                     if c.get("metadata", {}).get("nbgrader", {}).get("solution")
                     or c.get("metadata", {}).get("nbgrader", {}).get("grade"))
    for cell in solution_notebook(assignment).cells:
        if not cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            continue
        region = re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S)
        assert region, f"{_grade_id(cell)} has no solution region"
        for line in "".join(region).splitlines():
            line = line.strip()
            if len(line) > 15 and not line.startswith("#"):
                assert line not in text, f"solution line leaked into the student notebook: {line!r}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_released_notebook_has_a_stub_per_solution_and_readonly_tests(student_release, assignment):
    released = _released(student_release, assignment)
    for cell in released.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "markdown":  # a written answer
            assert cell.source.strip() == "YOUR ANSWER HERE" and meta.get("grade") and meta.get("points")
        elif meta.get("solution"):
            assert "raise NotImplementedError()" in cell.source
        elif meta.get("grade_id"):
            assert meta.get("locked"), f"{meta['grade_id']} should be read-only"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_released_notebook_links_to_book_chapters_that_exist(student_release, assignment):
    text = nbformat.writes(_released(student_release, assignment))
    assert "](book:" not in text
    source = "\n".join(c.source for c in solution_notebook(assignment).cells if c.cell_type == "markdown")
    links = re.findall(r"\[([^\]]+)\]\(book:([A-Za-z0-9_-]+)", source)
    assert links
    for label, stem in links:
        assert stem in CHAPTERS, stem
        assert CHAPTERS[stem].lower() in label.replace("*", "").lower(), \
            f"link text {label!r} should name {CHAPTERS[stem]!r}"


def test_book_links_become_urls_when_the_book_has_one():
    text = "[*Normalization*](book:normalize#what-eps-protects-against) and [x](book:backward)"
    assert rewrite_book_links(text, "https://example.org/bn") == (
        "[*Normalization*](https://example.org/bn/book/normalize.html#what-eps-protects-against) "
        "and [x](https://example.org/bn/book/backward.html)"
    )
    assert rewrite_book_links(text, "") == "*Normalization* and x"


def test_a_link_to_an_unknown_chapter_is_an_error():
    from autograder.nbgrader_ext.release import ReleaseError

    with pytest.raises(ReleaseError, match="unknown chapter book:nope"):
        rewrite_book_links("[a](book:nope)", "")


# --------------------------------------------------------------------------------------------
# Grades
# --------------------------------------------------------------------------------------------


def test_nbgrader_validate_passes_on_the_solutions(graded):
    proc = graded["validate"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("Success! Your notebook passes all the tests.") == len(ASSIGNMENTS), proc.stdout


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
@pytest.mark.parametrize("student", ["solution", "alternative-1", "alternative-2"])
def test_correct_notebooks_score_full_marks(graded, assignment, student):
    result = graded[assignment][student]
    lost = {k: result.error_text(k)[:500] for k, v in result.scores.items() if v < points(assignment)[k]}
    assert lost == {}
    assert result.total == _max(assignment)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_notebook_scores_zero_without_crashing(graded, assignment):
    result = graded[assignment]["blank"]
    assert result.total == 0 and set(result.scores) == set(points(assignment))
    for check in points(assignment):
        assert "NotImplementedError" in result.error_text(check)


GROUP_CASES = [(a, k) for a in ASSIGNMENTS for k in range(len(GROUPS[a]))]


@pytest.mark.parametrize("assignment,k", GROUP_CASES, ids=[f"{a}:{'+'.join(GROUPS[a][k])}" for a, k in GROUP_CASES])
def test_known_mistakes_lose_exactly_their_points_and_are_named(graded, assignment, k):
    keys = GROUPS[assignment][k]
    expected = {}
    for key in keys:
        overlap = set(expected) & VARIANT[key].fails
        assert not overlap, f"{key} shares failing checks {overlap} with another mistake of its group"
        expected.update({check: VARIANT[key] for check in VARIANT[key].fails})
    result = graded[assignment][f"mistakes-{k}"]
    lost = {check for check, score in result.scores.items() if score < points(assignment)[check]}
    assert lost == set(expected)
    assert all(result.scores[c] == 0 for c in lost)
    assert result.total == _max(assignment) - sum(points(assignment)[c] for c in expected)
    for check, variant in expected.items():
        if check in variant.named:
            mistake = by_name(variant.mistake)
            assert f"This looks like {mistake.title}." in result.error_text(check), result.error_text(check)


def test_every_catalogued_mistake_is_graded_as_student_code():
    made = {(v.mistake, v.assignment) for v in VARIANTS}
    grouped = {key for groups in GROUPS.values() for group in groups for key in group}
    assert grouped == set(VARIANT)
    assert made == {(m.name, a) for m in MISTAKES for a in m.assignments}


def test_feedback_holds_no_hidden_test_code(graded):
    for assignment in ASSIGNMENTS:
        for student, result in graded[assignment].items():
            for check in result.scores:
                text = result.error_text(check)
                leaks = ("check(", "HIDDEN", "autograder/inside/")
                assert not any(leak in text for leak in leaks), (student, check)


def test_deleted_graded_cells_are_restored_and_graded(graded):
    result = graded["bn-numpy-forward"]["deleted-cells"]
    assert result.total == _max("bn-numpy-forward")
    restored = [c for c in result.notebook.cells if "was missing from the submission" in c.source]
    assert len(restored) == 2


def test_duplicated_graded_cells_are_graded_once(graded):
    result = graded["bn-numpy-forward"]["duplicated-cells"]
    assert result.total == _max("bn-numpy-forward")
    graded_cells = [c for c in result.notebook.cells
                    if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c.cell_type == "code"]
    assert len(graded_cells) == len(points("bn-numpy-forward"))


def test_edited_test_cells_are_restored_before_grading(graded):
    result = graded["bn-numpy-forward"]["edited-test-cells"]
    expected = {c for key in GROUPS["bn-numpy-forward"][0] for c in VARIANT[key].fails}
    assert {c for c, s in result.scores.items() if s == 0} == expected
    assert not any(c.source == "print('all good')" for c in result.notebook.cells)


def test_delegating_notebook_scores_zero_on_that_part_and_says_why(graded):
    result = graded["bn-numpy-forward"]["delegating"]
    _, _, delegated = DELEGATING["bnlib"]
    for check in points("bn-numpy-forward"):
        if check in delegated:
            assert result.scores[check] == 0
            assert "bnlib" in result.error_text(check) and "scores 0" in result.error_text(check)
        else:
            assert result.scores[check] == points("bn-numpy-forward")[check]
