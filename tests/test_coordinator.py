"""The coordinator's choice of what to grade, and in what order: pure functions of what was found and what is done."""

from __future__ import annotations

from autograder.grading.coordinator import (
    GradeOptions,
    grading_order,
    is_done,
    missing_students,
    needs_speed,
    to_grade,
)
from autograder.grading.jobs import SpeedRequest, Status
from autograder.grading.store import Result
from autograder.grading.submissions import Submission
from autograder.sandbox import Limits

SOURCES = {"bn-numpy-forward": "src-fwd", "bn-torch": "src-torch"}


def _sub(student: str, assignment: str = "bn-numpy-forward", data: bytes = b"nb", **kw) -> Submission:
    return Submission(student, assignment, data, **kw)


def _row(sub: Submission, status: str = Status.GRADED, source: str | None = None) -> Result:
    return Result(sub.student, sub.assignment, status, sha256=sub.sha256,
                  source_sha256=SOURCES[sub.assignment] if source is None else source)


def _keys(subs) -> list[tuple[str, str]]:
    return [(s.student, s.assignment) for s in subs]


def test_what_is_graded_already_is_skipped():
    ada, bob = _sub("ada"), _sub("bob")
    done = {("ada", "bn-numpy-forward"): _row(ada)}
    assert _keys(to_grade([ada, bob], done, SOURCES)) == [("bob", "bn-numpy-forward")]
    assert is_done(done[("ada", "bn-numpy-forward")], ada, SOURCES)


def test_a_changed_notebook_is_graded_again():
    ada = _sub("ada")
    done = {("ada", "bn-numpy-forward"): _row(ada)}
    assert _keys(to_grade([_sub("ada", data=b"a new version")], done, SOURCES)) == [("ada", "bn-numpy-forward")]


def test_a_changed_assignment_source_grades_every_notebook_again():
    ada, bob = _sub("ada"), _sub("bob")
    done = {("ada", "bn-numpy-forward"): _row(ada), ("bob", "bn-numpy-forward"): _row(bob)}
    assert to_grade([ada, bob], done, {**SOURCES, "bn-numpy-forward": "edited"}) == [ada, bob]


def test_force_grades_every_notebook_again_but_not_a_missing_one():
    ada = _sub("ada")
    gone = Submission("cy", "bn-numpy-forward", status=Status.MISSING, problem="no submission for bn-numpy-forward")
    done = {("ada", "bn-numpy-forward"): _row(ada), ("cy", "bn-numpy-forward"): _row(gone, Status.MISSING)}
    assert to_grade([ada, gone], done, SOURCES, force=True) == [ada]


def test_a_malformed_notebook_is_done_like_any_other_and_forced_like_one():
    bad = _sub("dee", data=b"{not json", status=Status.MALFORMED, problem="the file is not valid JSON")
    done = {("dee", "bn-numpy-forward"): _row(bad, Status.MALFORMED)}
    assert to_grade([bad], done, SOURCES) == []
    assert to_grade([bad], done, SOURCES, force=True) == [bad]


def test_students_known_from_earlier_runs_are_missing_when_nothing_is_handed_in():
    found = [_sub("ada"), _sub("ada", "bn-torch")]
    missing = missing_students(["bob", "ada"], found, ["bn-numpy-forward", "bn-torch"])
    assert _keys(missing) == [("bob", "bn-numpy-forward"), ("bob", "bn-torch")]
    assert all(m.status == Status.MISSING and m.problem == f"no submission for {m.assignment}" for m in missing)


def test_a_missing_student_with_a_grade_keeps_it_and_one_never_graded_gets_a_missing_row():
    ada = _sub("ada")
    found = missing_students(["ada", "new"], [], ["bn-numpy-forward"])
    done = {("ada", "bn-numpy-forward"): _row(ada)}
    assert _keys(to_grade(found, done, SOURCES)) == [("new", "bn-numpy-forward")]


def test_a_late_notebook_graded_alone_keeps_the_rest_of_the_class():
    """One notebook handed in late, graded with `grade late.ipynb`: the others are not graded again."""
    class_ = [_sub(s) for s in ("ada", "bob", "cy")]
    done = {(s.student, s.assignment): _row(s) for s in class_}
    late = _sub("late-student")
    subs = [late] + missing_students(["ada", "bob", "cy"], [late], ["bn-numpy-forward"])
    assert to_grade(subs, done, SOURCES) == [late]


def test_speed_grades_again_a_torch_notebook_without_an_entry():
    torch_ada, torch_bob, numpy_ada = _sub("ada", "bn-torch"), _sub("bob", "bn-torch"), _sub("ada")
    done = {(s.student, s.assignment): _row(s) for s in (torch_ada, torch_bob, numpy_ada)}
    timed = {("ada", "bn-torch"): {"ratio": 1.2}}
    assert to_grade([torch_ada, torch_bob, numpy_ada], done, SOURCES, timed=timed) == [torch_bob]
    assert to_grade([torch_ada, torch_bob, numpy_ada], done, SOURCES) == []


def test_speed_never_runs_a_missing_or_malformed_notebook():
    assert not needs_speed(Submission("ada", "bn-torch", status=Status.MISSING), {})
    assert not needs_speed(_sub("ada", "bn-torch", status=Status.MALFORMED), {})
    assert not needs_speed(_sub("ada"), {})
    assert needs_speed(_sub("ada", "bn-torch"), {})


def test_torch_notebooks_go_first_then_by_assignment_and_student():
    subs = [_sub("bob"), _sub("zed", "bn-torch"), _sub("ada", "bn-numpy-backward"), _sub("ada"),
            _sub("amy", "bn-torch")]
    assert _keys(grading_order(subs)) == [("amy", "bn-torch"), ("zed", "bn-torch"), ("ada", "bn-numpy-backward"),
                                          ("ada", "bn-numpy-forward"), ("bob", "bn-numpy-forward")]


def test_the_options_limits_come_from_limits():
    assert GradeOptions("in", "out").limits() == Limits()
    limits = GradeOptions("in", "out", timeout=4, memory_mb=512).limits()
    assert (limits.cell_timeout, limits.notebook_timeout, limits.memory) == (4, 4 * Limits.NOTEBOOK_FACTOR, 2**29)
    assert GradeOptions("in", "out", timeout=4, notebook_timeout=9).limits().notebook_timeout == 9


def test_the_speed_request_is_made_only_with_speed():
    assert GradeOptions("in", "out").speed_request() is None
    assert GradeOptions("in", "out", speed=True).speed_request() == SpeedRequest()
    assert GradeOptions("in", "out", speed=True, speed_shape=(64, 8)).speed_request().shape == (64, 8)
