"""autograder.course.mistakes: every catalogued wrong variant really differs from the reference, and is named."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from student_code import ASSIGNMENTS, points

from autograder import judging
from autograder.course import reference as assignments
from autograder.course.mistakes import CHAPTERS, MISTAKES, Reading, by_name, for_assignment
from autograder.inside import scenarios


def _verdicts(namespace, assignment: str, seed: int) -> dict[str, judging.Verdict]:
    """Judge every check of ``assignment`` on ``namespace``, its own delegation ignored.

    The catalogue's variants are built from bnlib, which students may not call; here they
    stand for a student's code, so the run-time delegation facts are dropped.
    """
    out = {}
    for check in points(assignment):
        with np.errstate(all="ignore"):  # a variant may divide by zero: that is the mistake
            record = scenarios.run(check, namespace, seed)
        record.facts.pop("foreign", None)
        record.facts.pop("globals", None)
        out[check] = judging.verdict(check, record, seed)
    return out


CASES = [(m.name, a) for m in MISTAKES for a in m.assignments]


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("name,assignment", CASES, ids=[f"{a}:{n}" for n, a in CASES])
def test_every_mistake_fails_a_check_of_its_assignment_and_is_named(name, assignment, seed):
    mistake = by_name(name)
    verdicts = _verdicts(mistake.implementation(assignment), assignment, seed)
    failed = {check for check, v in verdicts.items() if not v.passed}
    assert failed, f"{name} passes every check of {assignment}: the judge's inputs cannot tell it from the reference"
    named = {check for check in failed if verdicts[check].mistake == name}
    assert named, f"{name} fails {sorted(failed)} but none names it: {[verdicts[c].mistake for c in failed]}"
    for check in named:
        assert mistake.title in verdicts[check].message
        assert str(mistake.read) in verdicts[check].message


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_reference_interface_passes_every_check(assignment):
    verdicts = _verdicts(assignments.reference(assignment), assignment, seed=3)
    assert all(v.passed for v in verdicts.values()), {c: v.message for c, v in verdicts.items() if not v.passed}


@pytest.mark.parametrize("function", ["", "FunctionSteps"], ids=["bnlib's function", "the variants' function"])
def test_torch_variants_with_no_step_changed_are_pytorch_exact(function):
    """The bases the torch variants override one step of are right when nothing is overridden."""
    from autograder.course import torch_variants

    verdicts = _verdicts(torch_variants.build(function, "BatchNorm1d"), "bn-torch", seed=5)
    assert all(v.passed for v in verdicts.values()), {c: v.message for c, v in verdicts.items() if not v.passed}


@pytest.mark.parametrize("assignment", ["bn-numpy-forward", "bn-numpy-backward"])
def test_the_numpy_variants_base_is_the_reference(assignment):
    """The base the NumPy variants override one step of passes every check."""
    from autograder.course.numpy_variants import NumpyBatchNorm

    base = NumpyBatchNorm()
    names = {name: getattr(base, name) for name in assignments.INTERFACE[assignment]}
    verdicts = _verdicts(names, assignment, seed=5)
    assert all(v.passed for v in verdicts.values()), {c: v.message for c, v in verdicts.items() if not v.passed}


def test_the_conv_variants_base_is_the_reference():
    """The base bn-conv's variants override one step of passes every check of bn-conv."""
    from autograder.course.conv_variants import NumpyNormFamily

    base = NumpyNormFamily()
    names = {name: getattr(base, name) for name in assignments.INTERFACE["bn-conv"]}
    verdicts = _verdicts(names, "bn-conv", seed=5)
    assert all(v.passed for v in verdicts.values()), {c: v.message for c, v in verdicts.items() if not v.passed}


def test_a_conv_mistake_replaces_forward_and_backward_together():
    """A bn-conv variant's cache is its own: a backward pass must never receive the reference's layer."""
    pairs = [("batchnorm2d_forward_train", "batchnorm2d_backward"), ("layernorm_forward", "layernorm_backward"),
             ("groupnorm_forward", "groupnorm_backward")]
    for mistake in for_assignment("bn-conv"):
        for forward, backward in pairs:
            assert (forward in mistake.overrides) == (backward in mistake.overrides), (mistake.name, forward)


def test_a_mistake_needs_a_variant_for_each_kind_of_its_assignments():
    from autograder.course.mistakes import Mistake, TorchVariant
    from autograder.course.numpy_variants import EpsIgnored

    read = Reading("normalize", "The normalization")
    with pytest.raises(ValueError, match="a variant for each kind"):
        Mistake("x", "x", "x", read, ("bn-numpy-forward", "bn-torch"), ("bn_forward_train",), numpy=EpsIgnored)
    with pytest.raises(ValueError, match="a variant for each kind"):
        Mistake("x", "x", "x", read, ("bn-numpy-forward",), ("bn_forward_train",), numpy=EpsIgnored,
                torch=TorchVariant("EpsOutsideSqrt"))


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_catalogue_entry_is_complete(mistake):
    assert re.fullmatch(r"[a-z][a-z0-9_]*", mistake.name)
    assert mistake.title and not mistake.title[0].isupper() and not mistake.title.endswith(".")
    assert mistake.looks_like.endswith(".") and len(mistake.looks_like) > 40
    assert mistake.read.chapter in CHAPTERS and mistake.read.section
    assert set(mistake.assignments) <= set(assignments.ASSIGNMENTS)
    interface = {name for a in mistake.assignments for name in assignments.INTERFACE[a]}
    assert set(mistake.overrides) <= interface
    for a in mistake.assignments:
        changed = {k for k, v in mistake.implementation(a).items() if v is not assignments.reference(a).get(k)}
        assert changed, f"{mistake.name} changes nothing in {a}"


def test_catalogue_covers_the_mistakes_the_course_promises():
    promised = {
        "unbiased_variance_normalizes",
        "biased_running_var",
        "momentum_reversed",
        "eps_outside_sqrt",
        "dx_missing_mean_path",
        "dx_missing_variance_path",
        "dgamma_wrong_axis",
        "dbeta_wrong_axis",
        "ncl_reshaped_without_transpose",
        "eval_uses_batch_statistics",
        "running_stats_updated_in_eval",
        "num_batches_not_counted",
        "momentum_none_not_cumulative",
    }
    assert promised <= {m.name for m in MISTAKES}


def test_stateful_variant_starts_fresh_on_every_build():
    mistake = by_name("backward_ignores_cache")
    first = mistake.implementation("bn-numpy-backward")
    second = mistake.implementation("bn-numpy-backward")
    import numpy as np

    first["bn_forward_train"](np.ones((4, 2)) * np.arange(4)[:, None], np.ones(2), np.zeros(2))
    with pytest.raises(KeyError):  # the second build never saw a forward pass
        second["bn_backward_compact"](np.ones((4, 2)), None)


def test_unknown_names_are_errors_that_list_the_known_ones():
    with pytest.raises(KeyError, match="known"):
        by_name("no_such_mistake")
    with pytest.raises(KeyError, match="does not apply"):
        by_name("momentum_reversed").implementation("bn-numpy-backward")
    with pytest.raises(KeyError, match="unknown assignment"):
        assignments.reference("bn-jax")


def test_for_assignment_filters_by_the_functions_replaced():
    names = {m.name for m in for_assignment("bn-numpy-forward", ("update_running_stats",))}
    assert names == {"biased_running_var", "momentum_reversed", "running_stats_updated_in_place"}


def test_reading_names_the_chapter_and_section():
    text = str(Reading("inference", "Running averages"))
    assert CHAPTERS["inference"] in text and "book/inference" in text and "Running averages" in text


def test_importing_the_catalogue_loads_neither_torch_nor_the_grading_machinery():
    code = ("import sys, autograder.course.mistakes; "
            "print('torch' in sys.modules, 'nbgrader' in sys.modules, 'autograder.grading' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
