"""The grading protocol: probe, scenarios and judge, without nbgrader.

Student code runs here in-process (``namespace(...)`` executes notebook cells in a fresh
``__main__``-like namespace), or in a subprocess with the probe in channel mode, as the
autograder's sandbox runs it (the tampering tests).
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import numpy as np
import pytest
from grading import judge_channel, run_channel, with_hidden_tests
from student_code import (
    ALTERNATIVES,
    ASSIGNMENTS,
    DELEGATING,
    GROUPS,
    TAMPERING,
    VARIANT,
    group_sources,
    points,
    solution_notebook,
    solution_sources,
    stub_sources,
)

from autograder.course.mistakes import CHAPTERS
from autograder.inside import probe, scenarios
from autograder.inside.scenarios import SCENARIOS, Record
from autograder.judging import judge


def namespace(sources: dict[str, str] | str) -> dict:
    """Execute notebook cells (a setup like the notebooks', then ``sources``) in a fresh namespace."""
    ns = {"__name__": "__main__", "__builtins__": builtins}
    exec("import numpy as np", ns)
    if "torch" in str(sources):
        exec("import torch\nfrom torch import nn", ns)
    for source in [sources] if isinstance(sources, str) else sources.values():
        exec(compile(source, "<student cell>", "exec"), ns)
    return ns


def verdicts(ns: dict, assignment: str, seed: int = 1, source: str = "") -> dict[str, judge.Verdict]:
    return {check: judge.verdict(check, scenarios.run(check, ns, seed), seed, source) for check in points(assignment)}


def failed(vs: dict[str, judge.Verdict]) -> dict[str, str]:
    return {check: v.message for check, v in vs.items() if not v.passed}


# --------------------------------------------------------------------------------------------
# Every correct implementation passes; the checks and the notebooks agree
# --------------------------------------------------------------------------------------------

IMPLEMENTATIONS = [(a, "solution", solution_sources(a)) for a in ASSIGNMENTS] + [
    (a, f"alternative {k + 1}", alt) for a in ASSIGNMENTS for k, alt in enumerate(ALTERNATIVES[a])
]


@pytest.mark.parametrize("seed", [0, 1, 123456])
@pytest.mark.parametrize("assignment,label,sources", IMPLEMENTATIONS, ids=[f"{a}:{l}" for a, l, _ in IMPLEMENTATIONS])
def test_correct_implementations_pass_every_check(assignment, label, sources, seed):
    source = "\n\n".join(sources.values())
    assert failed(verdicts(namespace(sources), assignment, seed, source)) == {}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_hidden_test_cell_calls_its_own_check(assignment):
    for cell in solution_notebook(assignment).cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            grade_id = meta["grade_id"]
            assert grade_id in SCENARIOS, f"{assignment}: no scenario for hidden test {grade_id}"
            assert f'check("{grade_id}", globals())' in cell.source
            assert cell.source.startswith('"""Check'), "a hidden test cell opens with a one-line docstring"
            assert meta["locked"] and meta["points"] > 0


def test_every_scenario_is_graded_by_a_notebook_and_has_a_reading():
    used = {check for a in ASSIGNMENTS for check in points(a)}
    assert used == set(SCENARIOS)
    for check in SCENARIOS:
        chapter, section = judge.READING[check]
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
    v = judge.verdict("running_var_unbiased", scenarios.run("running_var_unbiased", ns, 4), 4)
    assert not v.passed and v.mistake == "biased_running_var"
    assert "This check wants: update_running_stats folds the UNBIASED batch variance" in v.message
    assert "expected" in v.message and "got" in v.message
    assert "This looks like the biased variance stored in running_var" in v.message
    assert 'Reread the chapter "Inference: running statistics" (book/inference)' in v.message


def test_unnamed_failure_still_points_to_a_chapter():
    ns = namespace({"f": "def bn_forward_train(x, gamma, beta, eps=1e-5):\n    return x * 0.5, None\n"})
    v = judge.verdict("forward_train_output", scenarios.run("forward_train_output", ns, 0), 0)
    assert not v.passed and v.mistake is None
    assert 'Reread the chapter "Normalization"' in v.message


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_notebook_fails_every_check_saying_not_implemented(assignment):
    vs = verdicts(namespace(stub_sources(assignment)), assignment)
    assert set(failed(vs)) == set(points(assignment))
    for v in vs.values():
        assert "NotImplementedError" in v.message and v.mistake is None


def test_missing_function_is_named():
    v = judge.verdict("running_mean", scenarios.run("running_mean", {}, 0), 0)
    assert not v.passed and "`update_running_stats` is not defined" in v.message


def test_a_check_that_never_ran_scores_zero_and_says_so():
    v = judge.verdict("module_device", None, 0)
    assert not v.passed and "did not run" in v.message


def test_a_student_error_is_reported_with_the_call_that_raised():
    ns = namespace({"f": "def bn_forward_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):\n    return x @ x\n"})
    v = judge.verdict("forward_eval_output", scenarios.run("forward_eval_output", ns, 0), 0)
    assert not v.passed
    assert "bn_forward_eval(x, gamma, beta, running_mean, running_var, 1e-05) with x of shape (8, 5) raised ValueError" in v.message


def test_wrong_shape_is_reported_as_a_shape():
    ns = namespace({"f": "def update_running_stats(running_mean, running_var, x, momentum=0.1):\n    return x.mean(), x.var()\n"})
    v = judge.verdict("running_mean", scenarios.run("running_mean", ns, 0), 0)
    assert "expected shape (5,), got shape ()" in v.message


def test_failure_output_carries_the_message_and_no_code():
    v = judge.verdict("module_device", None, 0)
    out = judge.failure_output(v)
    nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", outputs=[nbformat.from_dict(out)])]))
    text = json.dumps(out)
    assert "did not run" in text
    assert "check(" not in text and "HIDDEN" not in text and "autograder" not in text


def test_local_mode_raises_a_check_failed_that_shows_only_its_message():
    ns = namespace(group_sources("bn-numpy-forward", ["momentum_reversed"]))
    probe.check("running_mean", ns)  # right: nothing happens
    with pytest.raises(probe.CheckFailed) as info:
        probe.check("running_momentum", ns)
    assert isinstance(info.value, AssertionError)
    shown = "\n".join(info.value._render_traceback_())
    assert "momentum reversed" in shown
    assert "check(" not in shown and "scenarios" not in shown and "Traceback" not in shown


def test_unknown_check_is_a_key_error():
    with pytest.raises(KeyError, match="no hidden check is called 'nope'"):
        probe.check("nope", {})


# --------------------------------------------------------------------------------------------
# Channel mode: records on disk
# --------------------------------------------------------------------------------------------


def test_channel_mode_writes_records_and_never_raises(monkeypatch):
    with tempfile.TemporaryDirectory() as channel:
        monkeypatch.setenv(probe.CHANNEL_ENV, channel)
        monkeypatch.setenv(probe.SEED_ENV, "42")
        ns = namespace(group_sources("bn-numpy-forward", ["momentum_reversed"]))
        probe.check("running_momentum", ns)  # wrong, but the sandbox side does not judge
        record = Record.load(channel, "running_momentum")
    assert record is not None and "running_mean_momentum_default" in record.arrays
    v = judge.verdict("running_momentum", record, 42)
    assert not v.passed and v.mistake == "momentum_reversed"


def test_records_round_trip_and_garbage_loads_as_none():
    with tempfile.TemporaryDirectory() as folder:
        _round_trip(Path(folder))


def _round_trip(tmp_path: Path) -> None:
    record = Record({"a": np.arange(3.0), "n": np.array(7)}, {"calls": {"a": "x"}, "error": {"call": "f", "type": "E", "message": "m"}})
    record.save(tmp_path, "c")
    back = Record.load(tmp_path, "c")
    assert back.facts == record.facts and np.array_equal(back.arrays["a"], record.arrays["a"])
    assert Record.load(tmp_path, "missing") is None
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    assert Record.load(tmp_path, "bad") is None
    np.savez(tmp_path / "obj.npz", a=np.array([object()], dtype=object))
    (tmp_path / "obj.json").write_text("{}")
    assert Record.load(tmp_path, "obj") is None  # object arrays are never unpickled


# --------------------------------------------------------------------------------------------
# Delegation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(DELEGATING))
def test_delegating_code_scores_zero_on_that_part_and_is_told_why(case):
    assignment, sources, delegated = DELEGATING[case]
    full = {**solution_sources(assignment), **sources}
    source = judge.CELL_SEPARATOR.join(full.values())
    vs = verdicts(namespace(full), assignment, 2, source)
    for check in delegated:
        assert vs[check].delegated and not vs[check].passed, (check, vs[check].message)
        assert "scores 0" in vs[check].message
    untouched = set(points(assignment)) - set(delegated) - {c for c in points(assignment) if "module" in c}
    assert all(vs[c].passed for c in untouched), failed(vs)


@pytest.mark.parametrize("case", sorted(DELEGATING))
def test_delegation_is_seen_at_run_time_without_the_source(case):
    assignment, sources, delegated = DELEGATING[case]
    vs = verdicts(namespace({**solution_sources(assignment), **sources}), assignment, 2, source="")
    assert all(vs[c].delegated for c in delegated), failed(vs)


@pytest.mark.parametrize(
    "source,target,family",
    [
        ("from bnlib.numpy import forward_train as ft\nbn_forward_train = ft\n", "bn_forward_train", "numpy"),
        ("import bnlib\ndef helper(x):\n    return bnlib.numpy.batch_mean(x)\ndef bn_forward_train(x, g, b, eps=1e-5):\n    return helper(x), None\n", "bn_forward_train", "numpy"),
        ("def bn_forward_eval(x, *a):\n    import torch\n    return torch.tensor(x).numpy()\n", "bn_forward_eval", "numpy"),
        ("import torch.nn.functional as F\nclass BatchNorm1d:\n    def forward(self, x):\n        return F.batch_norm(x, None, None, training=True)\n", "BatchNorm1d", "torch"),
        ("from torch import nn\nclass BatchNorm1d(nn.BatchNorm1d):\n    pass\n", "BatchNorm1d", "torch"),
        ("import torch\nclass BatchNormFunction:\n    def forward(ctx, x):\n        return torch.layer_norm(x.T, x.shape[:1]).T\n", "BatchNormFunction", "torch"),
    ],
)
def test_source_analysis_finds_delegation_through_aliases_and_helpers(source, target, family):
    assert judge._Analysis(source, family).kernel.get(target)


def test_source_analysis_finds_autograd_in_the_backward_pass():
    source = DELEGATING["autograd_backward"][1]["solution_batch_norm_function"]
    assert judge._Analysis(source, "torch").autograd["BatchNormFunction"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_source_analysis_accepts_the_solutions_and_alternatives(assignment):
    for sources in [solution_sources(assignment), *ALTERNATIVES[assignment]]:
        family = "torch" if assignment == "bn-torch" else "numpy"
        analysis = judge._Analysis(judge.CELL_SEPARATOR.join(sources.values()), family)
        assert not any(analysis.kernel.values()), analysis.kernel
        assert not any(analysis.autograd.values()), analysis.autograd


def test_student_source_leaves_out_the_locked_cells():
    nb = solution_notebook("bn-torch")
    source = judge.student_source(nb)
    assert "class BatchNorm1d(nn.Module)" in source
    assert "nn.BatchNorm1d(" not in source  # the visible tests compare with it; they are not the student's


def test_a_class_named_like_pytorchs_is_not_delegation():
    source = solution_sources("bn-torch")["solution_batch_norm_1d"].replace("super().__init__()", "super(BatchNorm1d, self).__init__()")
    ns = namespace({**solution_sources("bn-torch"), "solution_batch_norm_1d": source})
    vs = verdicts(ns, "bn-torch", 0, judge.CELL_SEPARATOR.join([source]))
    assert failed(vs) == {}


# --------------------------------------------------------------------------------------------
# Tampering: the probe runs in a subprocess in channel mode, the judge here
# --------------------------------------------------------------------------------------------


def _channel_verdicts(tmp_path, assignment, sources, extra_cells, seed=9):
    from student_code import fill

    released = nbformat.read(
        judge_release(assignment), as_version=4
    )
    nb = fill(released, sources, extra_cells)
    channel = tmp_path / "channel"
    try:
        proc = run_channel(with_hidden_tests(nb, assignment), channel, seed)
        assert proc.returncode == 0, proc.stderr
        return judge_channel(nb, channel, seed), proc
    finally:
        shutil.rmtree(channel, ignore_errors=True)


def judge_release(assignment):
    return os.path.join(os.path.dirname(__file__), "..", "_build", "release", assignment, f"{assignment}.ipynb")


@pytest.mark.slow
@pytest.mark.parametrize(
    "assignment,group",
    [("bn-numpy-forward", 0), ("bn-numpy-backward", 1), ("bn-torch", 0)],
)
def test_patching_comparisons_and_bnlib_in_the_notebook_changes_no_verdict(student_release, tmp_path, assignment, group):
    keys = GROUPS[assignment][group]
    sources = group_sources(assignment, keys)
    vs, proc = _channel_verdicts(tmp_path, assignment, sources, [(2, TAMPERING)])
    assert "tampered" not in proc.stderr
    expected = {check: VARIANT[key].mistake for key in keys for check in VARIANT[key].fails}
    assert set(failed(vs)) == set(expected)
    for check, mistake in expected.items():
        assert vs[check].mistake == mistake, vs[check].message


@pytest.mark.slow
def test_tampering_does_not_hurt_a_right_answer(student_release, tmp_path):
    vs, _ = _channel_verdicts(tmp_path, "bn-numpy-forward", solution_sources("bn-numpy-forward"), [(2, TAMPERING)])
    assert failed(vs) == {}


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


def test_device_check_on_the_meta_device_catches_tensors_made_on_the_default_device():
    right = namespace(solution_sources("bn-torch"))
    wrong = namespace(group_sources("bn-torch", ["tensor_on_default_device"]))
    options = {"device": "meta"}
    assert judge.verdict("module_device", scenarios.run("module_device", right, 0, options), 0).passed
    v = judge.verdict("module_device", scenarios.run("module_device", wrong, 0, options), 0)
    assert not v.passed and v.mistake == "tensor_on_default_device"


def test_device_check_on_a_real_device_compares_with_the_cpu():
    """The GPU branch of the device check (numbers compared with the CPU), run with the CPU as the device."""
    record = scenarios.run("module_device", namespace(solution_sources("bn-torch")), 0, {"device": "cpu"})
    assert record.facts["matches_cpu"] is True and record.facts["shapes"]["train_3d"] == [4, 5, 3]
    assert judge.verdict("module_device", record, 0, options={"device": "cpu"}).passed


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_device_check_on_the_gpu():
    right = namespace(solution_sources("bn-torch"))
    wrong = namespace(group_sources("bn-torch", ["tensor_on_default_device"]))
    record = scenarios.run("module_device", right, 0)
    assert record.facts["device"] == "cuda" and record.facts["matches_cpu"] is True
    assert judge.verdict("module_device", record, 0).passed
    assert not judge.verdict("module_device", scenarios.run("module_device", wrong, 0), 0).passed
