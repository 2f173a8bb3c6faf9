"""autograder.judging.verdict: right answers pass, wrong ones fail saying what, where and why.

Student code runs here in-process (:func:`in_process.namespace`); the records are judged in the
same process, as the trusted side judges the sandbox's.
"""

from __future__ import annotations

import numpy as np
import pytest
from in_process import failed, namespace, verdicts
from student_code import (
    ALTERNATIVES,
    ASSIGNMENTS,
    group_sources,
    points,
    solution_notebook,
    solution_sources,
    stub_sources,
)

from autograder import judging
from autograder.course.mistakes import CHAPTERS
from autograder.course.spec import READING
from autograder.inside import scenarios
from autograder.inside.scenarios import SCENARIOS
from autograder.notebook import is_test

# --------------------------------------------------------------------------------------------
# Every correct implementation passes; the checks and the notebooks agree
# --------------------------------------------------------------------------------------------

IMPLEMENTATIONS = [(a, "solution", solution_sources(a)) for a in ASSIGNMENTS] + [
    (a, f"alternative {k + 1}", alt) for a in ASSIGNMENTS for k, alt in enumerate(ALTERNATIVES[a])
]


@pytest.mark.parametrize("seed", [0, 1, 123456])
@pytest.mark.parametrize("assignment,label,sources", IMPLEMENTATIONS, ids=[f"{a}:{k}" for a, k, _ in IMPLEMENTATIONS])
def test_correct_implementations_pass_every_check(assignment, label, sources, seed):
    source = "\n\n".join(sources.values())
    assert failed(verdicts(namespace(sources), assignment, seed, source)) == {}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_hidden_test_cell_calls_its_own_check(assignment):
    for cell in solution_notebook(assignment).cells:
        meta = cell.metadata.get("nbgrader", {})
        if is_test(cell):  # the written answers are graded too, by hand
            grade_id = meta["grade_id"]
            assert grade_id in SCENARIOS, f"{assignment}: no scenario for hidden test {grade_id}"
            assert f'check("{grade_id}", globals())' in cell.source
            assert cell.source.startswith('"""Check'), "a hidden test cell opens with a one-line docstring"
            assert meta["locked"] and meta["points"] > 0


def test_every_scenario_is_graded_by_a_notebook_and_has_a_reading():
    used = {check for a in ASSIGNMENTS for check in points(a)}
    assert used == set(SCENARIOS)
    for check in SCENARIOS:
        chapter, section = READING[check]
        assert chapter in CHAPTERS and section


def test_checks_are_deterministic_for_a_seed_and_change_with_it():
    ns = namespace(solution_sources("bn-numpy-forward"))
    a = scenarios.run("forward_train_output", ns, 5)
    b = scenarios.run("forward_train_output", ns, 5)
    c = scenarios.run("forward_train_output", ns, 6)
    for key in a.arrays:
        assert np.array_equal(a.arrays[key], b.arrays[key])
        assert not np.allclose(a.arrays[key], c.arrays[key])


# --------------------------------------------------------------------------------------------
# What a failure says
# --------------------------------------------------------------------------------------------


def test_failure_says_what_was_expected_what_came_back_what_it_looks_like_and_where_to_read():
    ns = namespace(group_sources("bn-numpy-forward", ["biased_running_var"]))
    v = judging.verdict("running_var_unbiased", scenarios.run("running_var_unbiased", ns, 4), 4)
    assert not v.passed and v.mistake == "biased_running_var"
    assert "This check wants: update_running_stats folds the UNBIASED batch variance" in v.message
    assert "expected" in v.message and "got" in v.message
    assert "This looks like the biased variance stored in running_var" in v.message
    assert 'Reread the chapter "Inference: running statistics" (book/inference)' in v.message


def test_unnamed_failure_still_points_to_a_chapter():
    ns = namespace({"f": "def bn_forward_train(x, gamma, beta, eps=1e-5):\n    return x * 0.5, None\n"})
    v = judging.verdict("forward_train_output", scenarios.run("forward_train_output", ns, 0), 0)
    assert not v.passed and v.mistake is None
    assert 'Reread the chapter "Normalization"' in v.message


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_notebook_fails_every_check_saying_not_implemented(assignment):
    vs = verdicts(namespace(stub_sources(assignment)), assignment)
    assert set(failed(vs)) == set(points(assignment))
    for v in vs.values():
        assert "NotImplementedError" in v.message and v.mistake is None


def test_missing_function_is_named():
    v = judging.verdict("running_mean", scenarios.run("running_mean", {}, 0), 0)
    assert not v.passed and "`update_running_stats` is not defined" in v.message


def test_a_check_that_never_ran_scores_zero_and_says_so():
    v = judging.verdict("module_device", None, 0)
    assert not v.passed and "did not run" in v.message


def test_a_student_error_is_reported_with_the_call_that_raised():
    ns = namespace({"f": "def bn_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):\n"
                         "    return x @ x\n"})
    v = judging.verdict("forward_eval_output", scenarios.run("forward_eval_output", ns, 0), 0)
    assert not v.passed
    call = "bn_forward_eval(x, gamma, beta, running_mean, running_var, 1e-05) with x of shape (8, 5)"
    assert f"{call} raised ValueError" in v.message


def test_wrong_shape_is_reported_as_a_shape():
    ns = namespace({"f": "def update_running_stats(running_mean, running_var, x, momentum=0.1):\n"
                         "    return x.mean(), x.var()\n"})
    v = judging.verdict("running_mean", scenarios.run("running_mean", ns, 0), 0)
    assert "expected shape (5,), got shape ()" in v.message


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


def test_device_check_on_the_meta_device_catches_tensors_made_on_the_default_device():
    right = namespace(solution_sources("bn-torch"))
    wrong = namespace(group_sources("bn-torch", ["tensor_on_default_device"]))
    options = {"device": "meta"}
    assert judging.verdict("module_device", scenarios.run("module_device", right, 0, options), 0).passed
    v = judging.verdict("module_device", scenarios.run("module_device", wrong, 0, options), 0)
    assert not v.passed and v.mistake == "tensor_on_default_device"


def test_device_check_on_a_real_device_compares_with_the_cpu():
    """The GPU branch of the device check (numbers compared with the CPU), run with the CPU as the device."""
    record = scenarios.run("module_device", namespace(solution_sources("bn-torch")), 0, {"device": "cpu"})
    assert record.facts["matches_cpu"] is True and record.facts["shapes"]["train_3d"] == [4, 5, 3]
    assert judging.verdict("module_device", record, 0, options={"device": "cpu"}).passed


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_device_check_on_the_gpu():
    right = namespace(solution_sources("bn-torch"))
    wrong = namespace(group_sources("bn-torch", ["tensor_on_default_device"]))
    record = scenarios.run("module_device", right, 0)
    assert record.facts["device"] == "cuda" and record.facts["matches_cpu"] is True
    assert judging.verdict("module_device", record, 0).passed
    assert not judging.verdict("module_device", scenarios.run("module_device", wrong, 0), 0).passed
