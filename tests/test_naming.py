"""autograder.judging.naming and replay: a failure is named after the catalogued variant it reproduces."""

from __future__ import annotations

from in_process import namespace
from student_code import group_sources

from autograder.course.mistakes import for_assignment
from autograder.inside import scenarios
from autograder.inside.scenarios import SCENARIOS
from autograder.judging import replay
from autograder.judging.naming import name_mistake


def _named(check_id: str, ns: dict, seed: int = 4):
    sc = SCENARIOS[check_id]
    record = scenarios.run(check_id, ns, seed)
    ref = replay.reference_record(check_id, sc.assignment, seed, {})
    return name_mistake(sc, record, ref, seed, {})


def test_a_student_who_made_a_catalogued_mistake_is_told_its_name():
    ns = namespace(group_sources("bn-numpy-forward", ["momentum_reversed"]))
    assert _named("running_momentum", ns).name == "momentum_reversed"  # the second candidate, after a miss


def test_a_failure_like_no_variant_is_named_nothing():
    ns = namespace({"f": "def update_running_stats(running_mean, running_var, x, momentum=0.1):\n"
                         "    return running_mean * 3, running_var * 3\n"})
    assert _named("running_var_unbiased", ns) is None


def test_only_the_variants_that_replace_a_function_of_the_check_are_replayed():
    replay.clear()
    ns = namespace({"f": "def update_running_stats(running_mean, running_var, x, momentum=0.1):\n"
                         "    return running_mean * 3, running_var * 3\n"})
    assert _named("running_var_unbiased", ns, seed=11) is None  # so every candidate was tried
    tried = {key[1] for key in replay._RECORDS if key[0] == "mistake"}
    assert tried == {m.name for m in for_assignment("bn-numpy-forward", ("update_running_stats",))}


def test_replays_are_kept_per_check_seed_and_options():
    replay.clear()
    first = replay.reference_record("running_mean", "bn-numpy-forward", 5, {})
    assert replay.reference_record("running_mean", "bn-numpy-forward", 5, {}) is first
    assert replay.reference_record("running_mean", "bn-numpy-forward", 6, {}) is not first
