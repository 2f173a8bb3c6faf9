"""autograder.inside.probe: the call in every hidden test cell, in local mode and in channel mode.

Channel mode is also run as the sandbox runs it: the notebook's cells in a subprocess, the
records judged here (the tampering tests).
"""

from __future__ import annotations

import shutil
import tempfile

import nbformat
import pytest
from grading import judge_channel, run_channel, with_hidden_tests
from in_process import failed, namespace
from student_code import GROUPS, TAMPERING, VARIANT, fill, group_sources, solution_sources

from autograder import judging
from autograder.inside import probe
from autograder.inside.scenarios import Record


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


def test_channel_mode_writes_records_and_never_raises(monkeypatch):
    with tempfile.TemporaryDirectory() as channel:
        monkeypatch.setenv(probe.CHANNEL_ENV, channel)
        monkeypatch.setenv(probe.SEED_ENV, "42")
        ns = namespace(group_sources("bn-numpy-forward", ["momentum_reversed"]))
        probe.check("running_momentum", ns)  # wrong, but the sandbox side does not judge
        record = Record.load(channel, "running_momentum")
    assert record is not None and "running_mean_momentum_default" in record.arrays
    v = judging.verdict("running_momentum", record, 42)
    assert not v.passed and v.mistake == "momentum_reversed"


# --------------------------------------------------------------------------------------------
# Tampering: the probe runs in a subprocess in channel mode, the judge here
# --------------------------------------------------------------------------------------------


def _channel_verdicts(release, tmp_path, assignment, sources, extra_cells, seed=9):
    released = nbformat.read(release / assignment / f"{assignment}.ipynb", as_version=4)
    nb = fill(released, sources, extra_cells)
    channel = tmp_path / "channel"
    try:
        proc = run_channel(with_hidden_tests(nb, assignment), channel, seed)
        assert proc.returncode == 0, proc.stderr
        return judge_channel(nb, channel, seed), proc
    finally:
        shutil.rmtree(channel, ignore_errors=True)


@pytest.mark.parametrize(
    "assignment,group",
    [("bn-numpy-forward", 0), ("bn-numpy-backward", 1), ("bn-torch", 0), ("bn-conv", 0)],
)
def test_patching_comparisons_and_bnlib_in_the_notebook_changes_no_verdict(student_release, tmp_path, assignment,
                                                                            group):
    keys = GROUPS[assignment][group]
    sources = group_sources(assignment, keys)
    vs, proc = _channel_verdicts(student_release, tmp_path, assignment, sources, [(2, TAMPERING)])
    assert "tampered" not in proc.stderr
    expected = {check: VARIANT[key].mistake for key in keys for check in VARIANT[key].fails}
    assert set(failed(vs)) == set(expected)
    for check, mistake in expected.items():
        assert vs[check].mistake == mistake, vs[check].message


@pytest.mark.slow
def test_tampering_does_not_hurt_a_right_answer(student_release, tmp_path):
    right = solution_sources("bn-numpy-forward")
    vs, _ = _channel_verdicts(student_release, tmp_path, "bn-numpy-forward", right, [(2, TAMPERING)])
    assert failed(vs) == {}
