"""The status-and-reason decision table, called directly on constructed runs."""

from __future__ import annotations

import signal

import pytest

from autograder.grading.classify import Outcome, cell_notes, classify, reason
from autograder.grading.jobs import Status
from autograder.inside import protocol
from autograder.inside.protocol import CellEnd
from autograder.sandbox import Killed, Limits, RunResult

LIMITS = Limits(cell_timeout=7, notebook_timeout=70, memory=2 * 2**30, processes=16, output=500)


def _cells(*events_per_cell, outputs=None) -> dict[int, CellEnd]:
    """Cells 0, 1, ... with the given events (cell k at notebook index k)."""
    return {i: CellEnd(i, (outputs or {}).get(i, []), list(events)) for i, events in enumerate(events_per_cell)}


def _run(**fields) -> RunResult:
    return RunResult(started=True, **{"finished": True, **fields})


def test_a_clean_run_is_graded_without_a_reason():
    outcome = classify(_run(cells=_cells([], [])), LIMITS)
    assert outcome == Outcome(Status.GRADED, "", [])
    assert reason(outcome) == ""


def test_a_cell_interrupted_at_its_limit_is_a_timeout_that_names_the_cell():
    outcome = classify(_run(cells=_cells([], [], [protocol.TIMEOUT])), LIMITS)
    assert outcome.status == Status.TIMEOUT
    assert outcome.reason == "cell 3 ran for more than 7 s and was interrupted (an infinite loop?)"


def test_a_cell_that_did_not_stop_when_interrupted_is_a_timeout_where_it_was_stopped():
    run = _run(finished=False, killed_for=Killed.CELL_TIMEOUT, current_cell=4, cells=_cells([], []))
    outcome = classify(run, LIMITS)
    assert outcome.status == Status.TIMEOUT
    assert outcome.reason == ("cell 5 ran for more than 7 s and did not stop when interrupted; "
                              "the grader stopped the notebook there")


def test_the_notebook_time_limit_names_the_cell_it_stopped_in():
    outcome = classify(_run(finished=False, killed_for=Killed.NOTEBOOK_TIMEOUT, current_cell=1), LIMITS)
    assert (outcome.status, outcome.reason) == (Status.TIMEOUT, "the notebook ran for more than 70 s in all; "
                                                                "the grader stopped it in cell 2")


def test_a_notebook_stopped_between_cells_says_the_notebook():
    outcome = classify(_run(finished=False, killed_for=Killed.NOTEBOOK_TIMEOUT), LIMITS)
    assert outcome.reason.endswith("stopped it in the notebook")


@pytest.mark.parametrize("why", [Killed.OUTPUT, Killed.PROTOCOL])
def test_flooding_the_grader_with_output_is_a_crash(why):
    outcome = classify(_run(finished=False, killed_for=why, current_cell=0), Limits(protocol=64 * 2**20))
    assert outcome.status == Status.CRASHED
    assert outcome.reason == "cell 1 flooded the grader with output (more than 64 MB); the grader stopped it"


def test_an_oom_kill_is_out_of_memory_at_the_limit():
    outcome = classify(_run(finished=False, oom_killed=True, current_cell=2, exit_signal=9), LIMITS)
    assert (outcome.status, outcome.reason) == (Status.MEMORY, "cell 3 used more than 2 GiB of memory and was killed")


def test_a_segfault_is_a_crash_that_says_so():
    outcome = classify(_run(finished=False, exit_signal=signal.SIGSEGV, current_cell=0), LIMITS)
    assert outcome.status == Status.CRASHED
    assert outcome.reason.startswith("cell 1 crashed Python with a segmentation fault")
    assert outcome.reason.endswith("the cells after it did not run")


@pytest.mark.parametrize("number, name", [(signal.SIGKILL, "SIGKILL"), (signal.SIGABRT, "SIGABRT"), (77, "signal 77")])
def test_another_signal_is_a_crash_that_names_it(number, name):
    outcome = classify(_run(finished=False, exit_signal=number, current_cell=3), LIMITS)
    assert outcome.status == Status.CRASHED
    assert outcome.reason == f"cell 4 killed the notebook's process ({name}); the cells after it did not run"


def test_os_exit_is_a_crash_with_its_exit_code():
    outcome = classify(_run(finished=False, exit_code=0, current_cell=5), LIMITS)
    assert outcome.status == Status.CRASHED
    assert outcome.reason == ("cell 6 ended the notebook's process (os._exit or similar, exit code 0); "
                              "the cells after it did not run")


def test_a_memory_error_is_out_of_memory_in_the_first_cell_that_had_it():
    outcome = classify(_run(cells=_cells([], [protocol.MEMORY], [protocol.MEMORY])), LIMITS)
    assert (outcome.status, outcome.reason) == (Status.MEMORY, "cell 2 ran out of memory (MemoryError: the limit "
                                                               "is 2 GiB)")


def test_a_refused_fork_is_a_crash_at_the_process_limit():
    outcome = classify(_run(cells=_cells([protocol.PROCESS_LIMIT])), LIMITS)
    assert (outcome.status, outcome.reason) == (Status.CRASHED, "cell 1 tried to start more than 16 processes "
                                                                "(a fork bomb?) and was refused")


def test_a_fork_the_pids_cgroup_refused_without_an_event_blames_the_notebook():
    outcome = classify(_run(pids_limited=True, cells=_cells([])), LIMITS)
    assert outcome.status == Status.CRASHED and outcome.reason.startswith("the notebook tried to start more than 16")


def test_the_first_row_that_holds_decides():
    """A cell that did not stop outranks the MemoryError an earlier cell raised; a timeout outranks memory."""
    run = _run(finished=False, killed_for=Killed.CELL_TIMEOUT, current_cell=1, cells=_cells([protocol.MEMORY]))
    assert classify(run, LIMITS).status == Status.TIMEOUT
    assert classify(_run(cells=_cells([protocol.MEMORY], [protocol.TIMEOUT])), LIMITS).status == Status.TIMEOUT
    assert classify(_run(oom_killed=True, finished=False, exit_signal=9), LIMITS).status == Status.MEMORY


# ---------------------------------------------------------------- notes
def test_sys_exit_is_a_note_not_a_status():
    outcome = classify(_run(cells=_cells([], [protocol.SYSTEM_EXIT])), LIMITS)
    assert outcome.status == Status.GRADED
    assert outcome.notes == ["cell 2 called sys.exit(); the grader went on with the next cell"]


def test_a_file_outside_the_notebook_is_a_note_that_names_it():
    outcome = classify(_run(cells=_cells([protocol.file_event("/work/gradebook.db")])), LIMITS)
    assert outcome.notes == ["cell 1 tried to use /work/gradebook.db, outside the notebook's own folder; the "
                             "grader's sandbox has no such file and lets a notebook write only in its folder"]


def test_the_network_is_a_note():
    outcome = classify(_run(cells=_cells([], [], [protocol.NETWORK])), LIMITS)
    assert outcome.notes == ["cell 3 tried to use the network; the grader has none"]


def test_truncated_output_is_a_note_with_the_output_limit():
    dropped = {"output_type": "stream", "name": "stdout", "text": "\n[... 9,500 characters of output dropped by the "
                                                                  "grader ...]\n"}
    outcome = classify(_run(cells=_cells([], [], outputs={1: [dropped]})), LIMITS)
    assert outcome.notes == ["cell 2 printed too much; the grader kept the first 500 characters"]


def test_notes_come_with_any_status_in_a_fixed_order():
    run = _run(cells=_cells([protocol.NETWORK], [protocol.SYSTEM_EXIT, protocol.TIMEOUT]))
    outcome = classify(run, LIMITS)
    assert outcome.status == Status.TIMEOUT
    assert [n.split(" tried")[0].split(" called")[0] for n in outcome.notes] == ["cell 2", "cell 1"]


def test_a_duplicated_graded_cell_is_a_note():
    notes = cell_notes(["a", "b", "b", "c"], ["a", "b", "c"], ["a", "b", "c"])
    assert notes == ["the cell 'b' appears 2 times; the last copy was graded"]


def test_graded_cells_put_back_are_named_in_the_released_order():
    notes = cell_notes(["a"], ["c", "a", "b"], ["a", "b", "c"])
    assert notes == ["graded cells missing from the notebook were put back: b, c"]


def test_cells_without_a_grade_id_are_not_reported_as_duplicates():
    assert cell_notes([None, None, "a"], ["a"], ["a"]) == []


def test_the_reason_is_the_status_then_the_sanitizer_then_the_run():
    outcome = Outcome(Status.TIMEOUT, "cell 3 ran too long", ["cell 1 tried to use the network"])
    assert reason(outcome, ["the cell 'b' appears 2 times"]) == \
        "cell 3 ran too long; the cell 'b' appears 2 times; cell 1 tried to use the network"
    assert reason(Outcome(Status.GRADED), ["garbage"]) == "garbage"
