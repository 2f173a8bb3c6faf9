"""The student's feedback page: hidden tests cut out, the student's own text escaped."""

from __future__ import annotations

import nbformat

from autograder.grading.jobs import Answer, PartResult
from autograder.output.feedback import released_source, render


def test_the_hidden_region_is_cut_out_of_a_test_cell():
    source = '"""Check the output."""\n### BEGIN HIDDEN TESTS\nsecret()\n### END HIDDEN TESTS\nafter = 1'
    assert released_source(source) == '"""Check the output."""\nafter = 1'


def test_an_unterminated_hidden_region_shows_nothing():
    assert released_source('"""Check."""\n### BEGIN HIDDEN TESTS\nsecret()') == ""


def _answer(**parts):
    return Answer("ada", "bn-torch", score=1.0, max_score=2.0, parts=parts)


def test_what_the_student_wrote_is_escaped():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("<script>alert('md')</script>"),
        nbformat.v4.new_code_cell("print('<script>alert(1)</script>')", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="<img src=x onerror=alert(2)>")]),
    ])
    page = render(_answer(), nb)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page


def test_a_failed_part_shows_its_message_and_a_passed_part_its_points():
    meta = lambda gid: {"nbgrader": {"grade": True, "solution": False, "grade_id": gid, "points": 1}}  # noqa: E731
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('"""Check a."""\n### BEGIN HIDDEN TESTS\nsecret_a()\n### END HIDDEN TESTS',
                                  metadata=meta("a")),
        nbformat.v4.new_code_cell('"""Check b."""\n### BEGIN HIDDEN TESTS\nsecret_b()\n### END HIDDEN TESTS',
                                  metadata=meta("b")),
    ])
    page = render(_answer(a=PartResult(title="Check a.", passed=True, score=1, max_score=1),
                          b=PartResult(title="Check b.", passed=False, score=0, max_score=1,
                                       message="dgamma is summed over the wrong axis")), nb)
    assert "dgamma is summed over the wrong axis" in page
    assert "passed (1 / 1 points)" in page
    assert "secret_a" not in page and "secret_b" not in page
    assert "Score: 1 / 2" in page
