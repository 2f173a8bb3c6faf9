"""The wire protocol: every message and frame round-trips; garbage, forgeries and oversized frames are rejected."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograder.inside import protocol
from autograder.inside.protocol import (
    CHILD,
    CHILD_MESSAGES,
    GRADER_MESSAGES,
    MAX_FRAME,
    RUNNER,
    RUNNER_MESSAGES,
    CellEnd,
    CellStart,
    Done,
    Exit,
    FrameReader,
    JobMessage,
    Kill,
    ProtocolError,
    Ready,
    RecordFile,
    RecordTooLarge,
    RunnerReady,
    SetupFailed,
)
from autograder.paths import REPO_DIR


def _job(**changes) -> JobMessage:
    fields = dict(cells=[{"index": 2, "source": "print('é')"}], seed=7, cell_timeout=3.5, output=1000, record=10,
                  records=40, channel_files=5, channel="/tmp/ch", cwd="/scratch", uid=61001, disk=2**20,
                  rlimits={"memory": 2**30, "processes": 8})
    return JobMessage(**{**fields, **changes})


MESSAGES = [
    (Ready(12, 61000), CHILD_MESSAGES), (SetupFailed("Traceback ..."), CHILD_MESSAGES), (CellStart(3), CHILD_MESSAGES),
    (CellEnd(3, [{"output_type": "stream", "name": "stdout", "text": "hi\n"}], ["timeout", "file:/etc/x"], 0.25, 4),
     CHILD_MESSAGES),
    (RecordFile("check.npz", b"\x00\xffbinary\n"), CHILD_MESSAGES), (RecordTooLarge("big.npz", 10**9), CHILD_MESSAGES),
    (Done(), CHILD_MESSAGES), (RunnerReady(["numpy", "torch"]), RUNNER_MESSAGES),
    (Exit(139), RUNNER_MESSAGES), (Kill(), GRADER_MESSAGES), (_job(), GRADER_MESSAGES),
    (_job(uid=None), GRADER_MESSAGES),
]


def _name(value) -> str:
    return type(value).__name__ if isinstance(value, protocol.Message) else "stream"


@pytest.mark.parametrize("message, stream", MESSAGES, ids=_name)
def test_every_message_round_trips_as_one_ascii_line(message, stream):
    line = protocol.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.isascii()
    assert protocol.decode(line, stream) == message


@pytest.mark.parametrize("line", [b"", b"not json", b"[1, 2]", b'"a string"', b'{"t": "done"}',
                                  b'{"p": "bngrade/1", "t": "done"}', b'{"p": "bngrade/2"}',
                                  b'{"p": "bngrade/2", "t": 3}', b"\xff\xfe"])
def test_a_line_that_is_not_a_protocol_message_is_rejected(line):
    with pytest.raises(ProtocolError):
        protocol.decode(line, CHILD_MESSAGES)


def test_a_message_of_another_stream_or_type_is_ignored():
    assert protocol.decode(protocol.encode(Exit(0)), CHILD_MESSAGES) is None  # a notebook cannot send the runner's
    assert protocol.decode(protocol.encode(Kill()), CHILD_MESSAGES) is None
    assert protocol.decode(b'{"p": "bngrade/2", "t": "launch-missiles"}', CHILD_MESSAGES) is None


@pytest.mark.parametrize("fields", [{"index": "1", "outputs": []}, {"index": 1, "outputs": "text"}, {"index": True,
                                                                                                     "outputs": []},
                                    {"outputs": []}])
def test_a_cell_end_with_ill_typed_fields_is_ignored(fields):
    line = json.dumps({"p": protocol.VERSION, "t": protocol.END, **fields})
    assert protocol.decode(line, CHILD_MESSAGES) is None


def test_untrusted_fields_are_coerced_to_their_types():
    end = protocol.decode(json.dumps({"p": protocol.VERSION, "t": protocol.END, "index": 1, "outputs": [],
                                      "events": ["memory", 3, None], "seconds": "fast", "count": 2.5}), CHILD_MESSAGES)
    assert end == CellEnd(1, [], ["memory"], None, None)
    start = protocol.decode(json.dumps({"p": protocol.VERSION, "t": protocol.START, "index": "x"}), CHILD_MESSAGES)
    assert start == CellStart(None)


def test_a_record_that_is_not_base64_decodes_without_data():
    line = json.dumps({"p": protocol.VERSION, "t": protocol.RECORD, "name": "c.json", "data": "not base64!"})
    assert protocol.decode(line, CHILD_MESSAGES) == RecordFile("c.json", None)


@pytest.mark.parametrize("missing", ["cells", "seed", "rlimits", "channel"])
def test_a_job_without_a_field_is_not_a_job(missing):
    data = json.loads(protocol.encode(_job()))
    del data[missing]
    assert protocol.decode(json.dumps(data), GRADER_MESSAGES) is None


def test_complete_lines_are_split_from_the_rest():
    assert protocol.split_lines(b"a\nb\npartial") == ([b"a", b"b"], b"partial")
    assert protocol.split_lines(b"partial") == ([], b"partial")
    assert protocol.split_lines(b"a\n") == ([b"a"], b"")


def test_a_file_event_names_its_path_and_no_other_event_does():
    assert protocol.event_file(protocol.file_event("/etc/passwd")) == "/etc/passwd"
    assert all(protocol.event_file(e) is None for e in protocol.EVENTS)


# ---------------------------------------------------------------- frames
@given(st.lists(st.tuples(st.sampled_from([CHILD, RUNNER]), st.binary(max_size=300)), max_size=8),
       st.integers(min_value=1, max_value=64))
def test_frames_round_trip_however_the_stream_is_cut(frames, piece):
    stream = b"".join(protocol.encode_frame(kind, payload) for kind, payload in frames)
    reader, got = FrameReader(), []
    for start in range(0, len(stream), piece):
        got += reader.feed(stream[start:start + piece])
    assert got == frames
    assert reader.buffer == b""


def test_a_frame_of_unknown_kind_is_rejected():
    with pytest.raises(ProtocolError, match="unknown kind"):
        FrameReader().feed(b"X\x00\x00\x00\x01a")
    with pytest.raises(ValueError, match="unknown frame kind"):
        protocol.encode_frame(b"X", b"a")


def test_a_frame_that_claims_more_than_the_limit_is_rejected_before_it_arrives():
    header = CHILD + (MAX_FRAME + 1).to_bytes(4, "big")
    with pytest.raises(ProtocolError, match="more than"):
        FrameReader().feed(header)
    with pytest.raises(ValueError, match="at most"):
        protocol.encode_frame(CHILD, b"x" * (MAX_FRAME + 1))
    assert FrameReader().feed(protocol.encode_frame(CHILD, b"x" * MAX_FRAME)) == [(CHILD, b"x" * MAX_FRAME)]


def test_an_incomplete_frame_waits_for_the_rest():
    frame = protocol.encode_frame(RUNNER, protocol.encode(Exit(0)))
    reader = FrameReader()
    assert reader.feed(frame[:3]) == [] and reader.feed(frame[3:-1]) == []
    assert reader.feed(frame[-1:]) == [(RUNNER, protocol.encode(Exit(0)))]


# ---------------------------------------------------------------- the writer speaks it
def test_the_executor_writes_the_protocol_the_grader_reads(tmp_path):
    """The real writer, outside a sandbox: every line it writes decodes, in the order of a run."""
    channel = tmp_path / "channel"
    job = _job(cells=[{"index": 0, "source": "print('hi')"},
                      {"index": 2, "source": f"open({str(channel / 'c.json')!r}, 'w').write('{{}}')\n1 / 0"}],
               channel=str(channel), cwd=str(tmp_path), uid=None, record=2**20, records=2**22, channel_files=10,
               rlimits={"open_files": 256})
    proc = subprocess.run([sys.executable, "-c", "from autograder.inside.executor import main; main()"],
                          input=protocol.encode(job), capture_output=True, timeout=60, cwd=REPO_DIR,
                          env={"PYTHONPATH": str(REPO_DIR)})
    assert proc.returncode == 0, proc.stderr.decode()
    messages = [protocol.decode(line, CHILD_MESSAGES) for line in proc.stdout.splitlines()]
    assert [type(m) for m in messages] == [Ready, CellStart, CellEnd, CellStart, CellEnd, RecordFile, Done]
    assert messages[2].outputs == [{"output_type": "stream", "name": "stdout", "text": "hi\n"}]
    assert messages[4].index == 2 and messages[4].outputs[0]["ename"] == "ZeroDivisionError"
    assert messages[5] == RecordFile("c.json", b"{}")


def test_the_executor_refuses_what_is_not_a_job(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from autograder.inside.executor import main; main()"],
                          input=protocol.encode(Kill()), capture_output=True, timeout=60, cwd=REPO_DIR,
                          env={"PYTHONPATH": str(REPO_DIR)})
    assert proc.returncode == 70 and b"not a job" in proc.stderr and proc.stdout == b""
