"""The wire protocol between the grader and its sandboxes: one definition, imported by both sides.

The writer is :mod:`autograder.inside.executor`, inside the sandbox, next to the student's code;
the reader is the trusted side (:mod:`autograder.sandbox.monitor` and the warm runner's client,
:mod:`autograder.sandbox.zygote`). This module runs inside, so it imports the standard library
only. Three streams:

1. **The job** (grader -> executor): one :class:`JobMessage`, a JSON object on one line. A fresh
   sandbox reads it from its standard input until end of file (at most :data:`MAX_JOB` bytes);
   the warm runner reads one job per line, and a :class:`Kill` line stops the job it runs.
2. **Messages** (executor -> grader): newline-delimited JSON objects, each with the protocol's
   version under ``"p"`` and its type under ``"t"``: :class:`Ready` before any student code
   runs, then per cell :class:`CellStart` and :class:`CellEnd` (its outputs and the
   :data:`EVENTS` its exception said), a :class:`RecordFile` or :class:`RecordTooLarge` for
   each record the probe wrote, and :class:`Done` after the last cell. :class:`SetupFailed`
   says why a warm runner's child could not start.
3. **Frames** (warm runner -> grader): a kind byte, a 4-byte big-endian length, the payload.
   :data:`CHILD` frames carry a notebook's bytes verbatim (stream 2); :data:`RUNNER` frames
   carry one of the runner's own messages (:class:`RunnerReady`, :class:`Exit`). A notebook's
   bytes travel only inside child frames, so it cannot forge the runner's messages.

Everything the trusted side reads here is untrusted data: a notebook can write anything on
the message stream. :func:`decode` checks the version, the type and the types of the fields;
a line that is not a protocol message raises :class:`ProtocolError`, and a protocol message
of an unknown type, or whose fields have the wrong types, decodes to ``None`` (ignored).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "VERSION", "MAX_JOB", "MAX_FRAME", "HEADER", "CHILD", "RUNNER",
    "JOB", "KILL", "READY", "SETUP_FAILED", "START", "END", "RECORD", "RECORD_TOO_LARGE", "DONE",
    "EXIT", "EVENTS", "TIMEOUT", "MEMORY", "SYSTEM_EXIT", "PROCESS_LIMIT", "NETWORK",
    "FILE_PREFIX", "CHANNEL_ENV", "SEED_ENV", "ProtocolError", "Message", "JobMessage", "Kill", "Ready",
    "SetupFailed", "CellStart", "CellEnd", "RecordFile", "RecordTooLarge", "Done", "RunnerReady", "Exit",
    "CHILD_MESSAGES", "RUNNER_MESSAGES", "GRADER_MESSAGES", "encode", "decode", "split_lines",
    "file_event", "event_file", "encode_frame", "FrameReader",
]

#: Every message carries this under ``"p"``; both sides come from one checkout.
VERSION = "bngrade/2"
_VERSION_KEY, _TYPE_KEY = "p", "t"

#: The largest job a fresh sandbox reads (the cells' sources).
MAX_JOB = 64 * 2**20
#: The largest frame payload: the warm runner forwards a notebook's bytes in reads of this size.
MAX_FRAME = 2**20
#: A frame's header: the kind byte and the payload's length (4 bytes, big-endian).
HEADER = 5
#: Frame kinds: a notebook's bytes, and the warm runner's own message.
CHILD, RUNNER = b"C", b"Z"

# -- message types (the value under "t")
JOB, KILL = "job", "kill"
READY, SETUP_FAILED, START, END, DONE = "ready", "setup-failed", "start", "end", "done"
RECORD, RECORD_TOO_LARGE = "record", "record-too-large"
EXIT = "exit"

# -- what a cell's exception says about the run (CellEnd.events)
TIMEOUT = "timeout"              # interrupted at the cell time limit
MEMORY = "memory"                # MemoryError
SYSTEM_EXIT = "exit"             # sys.exit()
PROCESS_LIMIT = "process-limit"  # a fork refused by the process limit
NETWORK = "network"              # the network was tried
FILE_PREFIX = "file:"            # "file:<path>": a file outside the notebook's folders was tried
EVENTS = (TIMEOUT, MEMORY, SYSTEM_EXIT, PROCESS_LIMIT, NETWORK)

#: The environment the executor gives the notebook: the probe's channel folder and the seed.
CHANNEL_ENV, SEED_ENV = "BNGRADE_CHANNEL", "BNGRADE_SEED"


class ProtocolError(ValueError):
    """Bytes that are not the protocol: not a message, a frame of unknown kind or too large."""


def file_event(path: str) -> str:
    """The event of a cell that tried to use the file ``path``."""
    return FILE_PREFIX + path


def event_file(event: str) -> str | None:
    """The path of a :func:`file_event`; None for any other event."""
    return event[len(FILE_PREFIX):] if event.startswith(FILE_PREFIX) else None


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------- messages
@dataclass(frozen=True)
class Message:
    """A protocol message: its dataclass fields are its JSON keys (bytes travel as base64)."""

    TYPE: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = base64.b64encode(value).decode() if isinstance(value, bytes) else value
        return out

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> Message | None:
        """The message from untrusted JSON; None when a field has the wrong type."""
        return cls()


@dataclass(frozen=True)
class Kill(Message):
    """Grader -> warm runner: kill the job that runs now."""

    TYPE: ClassVar[str] = KILL


@dataclass(frozen=True)
class Ready(Message):
    """The executor is set up (limits, user, streams); no student code has run yet."""

    TYPE: ClassVar[str] = READY
    pid: int | None = None
    uid: int | None = None

    @classmethod
    def from_fields(cls, data):
        return cls(_as_int(data.get("pid")), _as_int(data.get("uid")))


@dataclass(frozen=True)
class SetupFailed(Message):
    """A warm runner's child could not set up its sandbox (before any student code)."""

    TYPE: ClassVar[str] = SETUP_FAILED
    error: str = ""

    @classmethod
    def from_fields(cls, data):
        return cls(str(data.get("error", "")))


@dataclass(frozen=True)
class CellStart(Message):
    """Cell ``index`` (of the notebook) starts: its time limit runs from now."""

    TYPE: ClassVar[str] = START
    index: int | None = None

    @classmethod
    def from_fields(cls, data):
        return cls(_as_int(data.get("index")))


@dataclass(frozen=True)
class CellEnd(Message):
    """Cell ``index`` ended: its outputs (nbformat's shapes), events, wall time, execution count."""

    TYPE: ClassVar[str] = END
    index: int = 0
    outputs: list = field(default_factory=list)
    events: list = field(default_factory=list)
    seconds: float | None = None
    count: int | None = None

    @classmethod
    def from_fields(cls, data):
        index, outputs, events = _as_int(data.get("index")), data.get("outputs"), data.get("events", [])
        if index is None or not isinstance(outputs, list):
            return None
        events = [e for e in events if isinstance(e, str)] if isinstance(events, list) else []
        return cls(index, outputs, events, _as_number(data.get("seconds")), _as_int(data.get("count")))


@dataclass(frozen=True)
class RecordFile(Message):
    """A record the probe wrote into the channel folder; ``data`` None when it could not be read."""

    TYPE: ClassVar[str] = RECORD
    name: str = ""
    data: bytes | None = None

    @classmethod
    def from_fields(cls, data):
        try:
            content = base64.b64decode(str(data.get("data", "")), validate=True)
        except (ValueError, binascii.Error):
            content = None
        return cls(str(data.get("name", "")), content)


@dataclass(frozen=True)
class RecordTooLarge(Message):
    """A record past the record limits: not sent."""

    TYPE: ClassVar[str] = RECORD_TOO_LARGE
    name: str = ""
    size: int | None = None

    @classmethod
    def from_fields(cls, data):
        return cls(str(data.get("name", "")), _as_int(data.get("size")))


@dataclass(frozen=True)
class Done(Message):
    """Every cell ran."""

    TYPE: ClassVar[str] = DONE


@dataclass(frozen=True)
class RunnerReady(Message):
    """The warm runner imported ``preloaded`` and waits for jobs."""

    TYPE: ClassVar[str] = READY
    preloaded: list = field(default_factory=list)

    @classmethod
    def from_fields(cls, data):
        preloaded = data.get("preloaded", [])
        return cls([str(p) for p in preloaded] if isinstance(preloaded, list) else [])


@dataclass(frozen=True)
class Exit(Message):
    """The job's child ended: its exit code (128 + N for signal N)."""

    TYPE: ClassVar[str] = EXIT
    code: int | None = None

    @classmethod
    def from_fields(cls, data):
        return cls(_as_int(data.get("code")))


@dataclass(frozen=True)
class JobMessage(Message):
    """Grader -> executor: one notebook's code cells and what they may use.

    Args:
        cells: ``[{"index": i, "source": text}]``, the code cells in order (``i`` counts every
            cell of the notebook).
        seed: the seed of the student's challenge inputs (``$BNGRADE_SEED``).
        cell_timeout: seconds before a cell is interrupted.
        output: characters of output kept per cell.
        record: bytes of one record sent at most.
        records: bytes of records sent in all.
        channel_files: files of the channel folder looked at after each cell.
        channel: the probe's channel folder (``$BNGRADE_CHANNEL``).
        cwd: the notebook's working folder.
        uid: the unprivileged user the executor drops to when it starts as root (None: stay).
        disk: bytes of each private RAM disk (warm runner only: it mounts them).
        rlimits: the resource limits, ``{"memory", "processes", "file_size", "open_files"}``.
    """

    TYPE: ClassVar[str] = JOB
    cells: list
    seed: int
    cell_timeout: float
    output: int
    record: int
    records: int
    channel_files: int
    channel: str
    cwd: str
    uid: int | None
    disk: int
    rlimits: dict

    @classmethod
    def from_fields(cls, data):
        try:
            cells = [{"index": int(c["index"]), "source": str(c["source"])} for c in data["cells"]]
            rlimits = {str(k): int(v) for k, v in dict(data["rlimits"]).items()}
            return cls(cells, int(data["seed"]), float(data["cell_timeout"]), int(data["output"]),
                       int(data["record"]), int(data["records"]), int(data["channel_files"]),
                       str(data["channel"]), str(data["cwd"]), _as_int(data.get("uid")), int(data["disk"]), rlimits)
        except (KeyError, TypeError, ValueError):
            return None


#: The messages of each stream, by type.
CHILD_MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in (Ready, SetupFailed, CellStart, CellEnd, RecordFile,
                                                                 RecordTooLarge, Done)}
RUNNER_MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in (RunnerReady, Exit)}
GRADER_MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in (JobMessage, Kill)}


def encode(message: Message) -> bytes:
    """``message`` as one line of JSON (ASCII), ending in a newline."""
    data = {_VERSION_KEY: VERSION, _TYPE_KEY: message.TYPE, **message.fields()}
    return (json.dumps(data, ensure_ascii=True) + "\n").encode()


def decode(line: bytes | str, messages: dict[str, type[Message]]) -> Message | None:
    """One message of a stream whose types are ``messages`` (e.g. :data:`CHILD_MESSAGES`).

    Raises ProtocolError when ``line`` is not a protocol message (not a JSON object, another
    version, no type); returns None for a message of another type or with ill-typed fields.
    """
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("not JSON") from None
    if not isinstance(data, dict) or data.get(_VERSION_KEY) != VERSION or not isinstance(data.get(_TYPE_KEY), str):
        raise ProtocolError("not a protocol message")
    kind = messages.get(data[_TYPE_KEY])
    return kind.from_fields(data) if kind is not None else None


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of ``buffer`` (without their newlines), and what follows the last one."""
    *lines, rest = buffer.split(b"\n")
    return lines, rest


# ---------------------------------------------------------------- frames
def encode_frame(kind: bytes, payload: bytes) -> bytes:
    """One frame: ``kind`` (:data:`CHILD` or :data:`RUNNER`), the payload's length, the payload."""
    if kind not in (CHILD, RUNNER):
        raise ValueError(f"unknown frame kind {kind!r}")
    if len(payload) > MAX_FRAME:
        raise ValueError(f"a frame holds at most {MAX_FRAME} bytes, not {len(payload)}")
    return kind + len(payload).to_bytes(HEADER - 1, "big") + payload


class FrameReader:
    """Frames from a byte stream that arrives in pieces.

    :meth:`feed` returns the frames complete so far, as ``(kind, payload)``; it raises
    ProtocolError on a frame of unknown kind or one that claims more than :data:`MAX_FRAME`
    bytes (the stream is then broken: nothing after it can be trusted to be a frame).
    """

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        self.buffer += chunk
        frames = []
        while len(self.buffer) >= HEADER:
            kind, size = bytes(self.buffer[:1]), int.from_bytes(self.buffer[1:HEADER], "big")
            if kind not in (CHILD, RUNNER):
                raise ProtocolError(f"a frame of unknown kind {kind!r}")
            if size > MAX_FRAME:
                raise ProtocolError(f"a frame of {size} bytes, more than the {MAX_FRAME} a frame may hold")
            if len(self.buffer) < HEADER + size:
                break
            frames.append((kind, bytes(self.buffer[HEADER:HEADER + size])))
            del self.buffer[:HEADER + size]
        return frames
