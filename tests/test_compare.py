"""autograder.judging.compare: records against the reference's, and against a wrong variant's."""

from __future__ import annotations

import numpy as np
import pytest

from autograder.inside.scenarios import SCENARIOS, Record
from autograder.judging.compare import FLOOR, problems, relative_error, same


def test_relative_error_is_on_the_max_norm():
    want = np.array([1.0, -4.0, 2.0])
    assert relative_error(want + np.array([0.0, 0.0, 0.4]), want) == pytest.approx(0.1)


def test_answers_that_are_both_zero_up_to_rounding_agree():
    assert relative_error(np.full(3, 1e-14), np.zeros(3)) <= 1e-14 / FLOOR
    assert relative_error(np.full(3, 1e-3), np.zeros(3)) == 1e-3 / FLOOR


def test_a_nan_where_a_number_belongs_or_a_wrong_shape_is_infinitely_wrong():
    assert relative_error(np.array([np.nan, 1.0]), np.array([0.5, 1.0])) == float("inf")
    assert relative_error(np.ones(3), np.ones(4)) == float("inf")
    assert relative_error(np.array([np.nan]), np.array([np.nan])) == 0.0


def _record(y, **facts) -> Record:
    return Record({"y_8x5": np.asarray(y, dtype=float)}, {"calls": {"y_8x5": "y from the call"}, **facts})


def test_a_problem_line_says_what_was_called_where_it_differs_and_by_how_much():
    sc = SCENARIOS["forward_train_output"]
    ref = _record(np.ones((8, 5)))
    wrong = np.ones((8, 5))
    wrong[2, 1] = 1.5
    found, diag = problems(sc, _record(wrong), ref)
    assert found == ["- y from the call: wrong at [2, 1], expected 1, got 1.5 "
                     "(largest difference 0.5 of the largest value)."]
    assert diag == ""
    assert problems(sc, _record(np.ones((8, 5)) * (1 + 1e-5)), ref) == ([], "")  # within rtol 1e-4


def test_arguments_changed_in_place_are_a_problem_of_a_pure_check():
    sc = SCENARIOS["forward_train_output"]
    found, _ = problems(sc, _record(np.ones((8, 5)), modified=["argument 1 of f(x)"]), _record(np.ones((8, 5))))
    assert found and "changed its arguments in place (argument 1 of f(x))" in found[0]


def test_errors_match_a_variant_on_the_call_the_type_and_the_message():
    sc = SCENARIOS["forward_train_output"]
    error = {"call": "f(x)", "type": "ValueError", "message": "bad"}
    assert same(sc, Record(facts={"error": error}), Record(facts={"error": dict(error)}))
    assert not same(sc, Record(facts={"error": error}), Record(facts={"error": {**error, "message": "other"}}))
    assert not same(sc, Record(facts={"error": error}), _record(np.ones((8, 5))))


def test_a_record_looks_like_a_variant_when_its_arrays_agree_within_the_tolerance():
    sc = SCENARIOS["forward_train_output"]
    variant = _record(np.arange(40.0).reshape(8, 5))
    assert same(sc, _record(np.arange(40.0).reshape(8, 5) * (1 + 1e-7)), variant)
    assert not same(sc, _record(np.arange(40.0).reshape(8, 5) * 1.01), variant)
