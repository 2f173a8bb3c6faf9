"""The monitor reads a run's messages as untrusted data: caps, garbage and oversized lines, no process needed."""

from __future__ import annotations

from autograder.inside import protocol
from autograder.inside.protocol import CellEnd, CellStart, Done, Ready, RecordFile, RecordTooLarge, SetupFailed
from autograder.sandbox import Killed, Limits
from autograder.sandbox.monitor import GARBAGE, Monitor


def _monitor(**limits) -> Monitor:
    return Monitor(proc=None, limits=Limits(**limits))


def _feed(monitor: Monitor, *messages) -> None:
    monitor.feed(b"".join(m if isinstance(m, bytes) else protocol.encode(m) for m in messages))


def test_a_run_is_read_message_by_message():
    m = _monitor()
    _feed(m, Ready(1, 0), CellStart(0), CellEnd(0, [{"output_type": "stream"}], ["network"], 0.1, 1),
          RecordFile("c.json", b"{}"), CellStart(2))
    r = m.result
    assert r.started and not r.finished
    assert r.cells[0].events == ["network"] and r.records == {"c.json": b"{}"}
    assert r.current_cell == 2 and m.cell_started is not None, "the cell's time limit runs from its start"
    _feed(m, CellEnd(2, []), Done())
    assert r.finished and r.current_cell is None and m.cell_started is None


def test_a_message_split_across_reads_is_read_once_whole():
    m = _monitor()
    line = protocol.encode(CellEnd(0, [{"output_type": "stream", "text": "x" * 1000}]))
    for start in range(0, len(line), 7):
        m.feed(line[start:start + 7])
    assert list(m.result.cells) == [0]


def test_garbage_is_noted_a_few_times_and_blank_lines_not_at_all():
    m = _monitor(problems=3)
    _feed(m, *[b"not json\n"] * 10, b"\n", b'{"t": "done"}\n')
    assert m.result.problems == [GARBAGE] * 3
    assert not m.result.finished, "a forged message without the protocol's version is garbage"


def test_a_cells_events_are_capped():
    m = _monitor(events=2)
    _feed(m, CellEnd(0, [], ["memory", "network", "exit", "timeout"]))
    assert m.result.cells[0].events == ["memory", "network"]


def test_records_that_cannot_be_read_or_were_too_large_are_problems():
    m = _monitor()
    _feed(m, b'{"p": "%s", "t": "record", "name": "bad.npz", "data": "@@"}\n' % protocol.VERSION.encode(),
          RecordTooLarge("huge.npz", 10**9))
    assert m.result.records == {}
    assert m.result.problems == ["record 'bad.npz' could not be read", "record 'huge.npz' was too large to keep"]


def test_a_line_longer_than_a_message_stops_the_run():
    m = _monitor(message=1000)
    m.feed(b"x" * 1001)
    assert m.result.killed_for == Killed.PROTOCOL and m.buffer == b""


def test_more_bytes_than_the_protocol_limit_stop_the_run():
    m = _monitor(protocol=10_000)
    _feed(m, Ready())
    m.feed(b"y" * 10_000)
    assert m.result.killed_for == Killed.OUTPUT and m.result.started


def test_a_setup_failure_is_kept_with_the_runners_messages():
    m = _monitor()
    _feed(m, SetupFailed("Traceback: mount tmpfs /tmp: Operation not permitted"))
    assert b"Operation not permitted" in m.stderr


def test_the_exit_status_says_a_code_or_a_signal():
    for status, code, sig in [(0, 0, None), (3, 3, None), (139, None, 11), (-9, None, 9)]:
        m = _monitor()
        m.exit_status(status)
        assert (m.result.exit_code, m.result.exit_signal) == (code, sig)
