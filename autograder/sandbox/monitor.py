"""Watching one run from outside: its messages read with deadlines and caps, the run stopped at a limit.

The executor's messages (:mod:`autograder.inside.protocol`) arrive on bubblewrap's standard
output (a fresh sandbox) or inside the warm runner's child frames (:mod:`autograder.sandbox.zygote`).
Either way :class:`Monitor` reads them as untrusted data into a :class:`RunResult`: the time
limits run from what the executor says (a cell's limit from its start message), the bytes read
are capped, and when a limit is passed the run is stopped (a kill, or a request to the warm
runner) and :attr:`RunResult.killed_for` says why.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable

from autograder.inside import protocol
from autograder.sandbox.limits import Limits
from autograder.sandbox.result import Killed, RunResult

__all__ = ["Monitor", "kill_process", "GARBAGE"]

#: The problem noted for a line on the protocol stream that is not a protocol message.
GARBAGE = "the notebook wrote garbage into the grader's channel"
#: Characters of a record's name, and of a setup failure, quoted in the problems and stderr.
_NAME_CHARS, _SETUP_ERROR_CHARS = 80, 4000
#: Bytes read from a pipe at once; the longest wait between two looks at the deadlines.
_READ, _TICK = 2**20, 1.0


def kill_process(proc: subprocess.Popen) -> None:
    """SIGKILL bubblewrap: its --die-with-parent child, and the PID namespace with it, follow."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream:
                stream.close()
        except OSError:
            pass
    proc.wait()


class Monitor:
    """Read a notebook's messages with deadlines and caps; stop it when a limit is passed.

    In the fresh mode (:meth:`run`) the messages are bubblewrap's standard output and stopping
    is a kill; in the warm mode the warm runner's client calls :meth:`loop` with its own
    reader of frames (it passes the child's bytes to :meth:`feed`) and stopping is a request
    to the runner.
    """

    def __init__(self, proc: subprocess.Popen, limits: Limits) -> None:
        self.proc, self.limits = proc, limits
        self.result = RunResult()
        self.buffer = bytearray()
        self.stderr = bytearray()
        self.read = 0
        self.cell_started: float | None = None

    # -- the loop, shared by both modes
    def loop(self, on_stdout: Callable[[bytes], None], finished: Callable[[], bool],
             stop: Callable[[], bool], stop_grace: float) -> None:
        """Read until the run ends; at a limit call `stop` (True: stopped for good, read no more).

        Raises TimeoutError when the run did not end `stop_grace` seconds after `stop`.
        """
        start = time.monotonic()
        r, limits = self.result, self.limits
        sel = selectors.DefaultSelector()
        for stream in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        notebook_deadline = start + limits.notebook_timeout
        stop_deadline = None
        try:
            while not finished():
                now = time.monotonic()
                if stop_deadline is None:
                    deadline = notebook_deadline
                    if self.cell_started is not None:
                        deadline = min(deadline, self.cell_started + limits.cell_timeout + limits.grace)
                    if r.killed_for is None and now >= deadline:
                        r.killed_for = Killed.NOTEBOOK_TIMEOUT if deadline == notebook_deadline else Killed.CELL_TIMEOUT
                    if r.killed_for is not None:
                        if stop():  # stopped for good: nothing more to read
                            return
                        stop_deadline = now + stop_grace
                        continue
                elif now >= stop_deadline:
                    raise TimeoutError("the sandbox did not stop")
                timeout = (stop_deadline if stop_deadline is not None else deadline) - now
                events = sel.select(timeout=max(0.0, min(timeout, _TICK)))
                if not events and self.proc.poll() is not None and not sel.get_map():
                    break
                for key, _ in events:
                    try:
                        chunk = os.read(key.fileobj.fileno(), _READ)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(key.fileobj)
                        if not sel.get_map():
                            return
                    elif key.fileobj is self.proc.stderr:
                        if len(self.stderr) < limits.stderr:
                            self.stderr += chunk[:limits.stderr - len(self.stderr)]
                    else:
                        on_stdout(chunk)
        finally:
            sel.close()
            r.stderr = self.stderr.decode(errors="replace")
            r.wall = time.monotonic() - start

    # -- fresh mode
    def run(self, job: protocol.JobMessage) -> RunResult:
        """Send `job` to a fresh sandbox's executor and watch it to the end."""
        try:
            self.proc.stdin.write(protocol.encode(job))
            self.proc.stdin.close()
        except OSError:
            pass

        def stop() -> bool:
            kill_process(self.proc)
            return True

        try:
            self.loop(self.feed, lambda: False, stop, self.limits.stop_grace)
        except TimeoutError:
            pass
        kill_process(self.proc)
        self.exit_status(self.proc.returncode)
        return self.result

    def exit_status(self, status: int | None) -> None:
        """Record how the notebook's process ended: bubblewrap exits with its child's status,
        or 128 + N when a signal N killed it (the warm runner reports the same)."""
        r = self.result
        if status is not None:
            if status < 0:
                r.exit_signal = -status
            elif status > 128:
                r.exit_signal = status - 128
            else:
                r.exit_code = status

    # -- the executor's messages
    def feed(self, chunk: bytes) -> None:
        """Bytes of the executor's message stream (capped at Limits.protocol and Limits.message)."""
        r = self.result
        self.read += len(chunk)
        if self.read > self.limits.protocol:
            r.killed_for = r.killed_for or Killed.OUTPUT
            return
        self.buffer += chunk
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > self.limits.message:
                    r.killed_for = r.killed_for or Killed.PROTOCOL
                    self.buffer.clear()
                return
            line = bytes(self.buffer[:end])
            del self.buffer[:end + 1]
            self.message(line)

    def message(self, line: bytes) -> None:
        """One line of the stream: a message changes the result; garbage is noted, a few times."""
        r = self.result
        try:
            msg = protocol.decode(line, protocol.CHILD_MESSAGES)
        except protocol.ProtocolError:
            if line.strip() and len(r.problems) < self.limits.problems:
                r.problems.append(GARBAGE)
            return
        if isinstance(msg, protocol.Ready):
            r.started = True
        elif isinstance(msg, protocol.SetupFailed):  # kept with the runner's own messages
            self.stderr += msg.error[:_SETUP_ERROR_CHARS].encode(errors="replace")
        elif isinstance(msg, protocol.CellStart):
            r.current_cell = msg.index
            self.cell_started = time.monotonic()
        elif isinstance(msg, protocol.CellEnd):
            r.cells[msg.index] = protocol.CellEnd(msg.index, msg.outputs, msg.events[:self.limits.events],
                                                  msg.seconds, msg.count)
            r.current_cell = None
            self.cell_started = None
        elif isinstance(msg, protocol.RecordFile):
            if msg.data is None:
                r.problems.append(f"record {msg.name[:_NAME_CHARS]!r} could not be read")
            else:
                r.records[msg.name] = msg.data
        elif isinstance(msg, protocol.RecordTooLarge):
            r.problems.append(f"record {msg.name[:_NAME_CHARS]!r} was too large to keep")
        elif isinstance(msg, protocol.Done):
            r.finished = True
