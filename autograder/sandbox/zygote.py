"""The warm runner's client: start it, hand it one job at a time, read its frames, stop it.

The warm runner (:func:`autograder.inside.executor.zygote`) runs as root in a bubblewrap
sandbox of its own and forks a fresh sandbox per notebook. Its standard output is a stream of
frames (:mod:`autograder.inside.protocol`): the notebook's own bytes in child frames, which go
to a :class:`~autograder.sandbox.monitor.Monitor` as in a fresh sandbox, and the runner's
messages (ready, started, exit) in runner frames, which a notebook cannot forge.
"""

from __future__ import annotations

import os
import select
import subprocess
import time

from autograder.inside import protocol
from autograder.sandbox.limits import Limits
from autograder.sandbox.monitor import Monitor, kill_process
from autograder.sandbox.result import RunResult, SandboxError

__all__ = ["WarmRunner"]

#: Bytes of the runner's stderr quoted when it did not start; of a run's stderr when it stopped.
_START_ERROR_CHARS, _STOP_ERROR_CHARS = 4000, 2000
#: Bytes read from the runner at once while it starts; the pause between looks.
_READ, _TICK = 2**16, 0.5


class WarmRunner:
    """The warm runner of one slot and kind of assignment (see :class:`autograder.sandbox.Sandbox`).

    Args:
        argv: its command line (:func:`autograder.sandbox.mounts.bwrap_args` with ``warm``).
        limits: the slot's limits; ``warm_start`` bounds the runner's start.
    """

    def __init__(self, argv: list[str], limits: Limits) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, close_fds=True)
        self.frames = protocol.FrameReader()
        self.start_timeout = limits.warm_start
        self.ready = False

    def wait_ready(self) -> None:
        """Wait for the runner's imports (it starts them as soon as it is created)."""
        if self.ready:
            return
        deadline = time.monotonic() + self.start_timeout
        while not self.ready:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                exited = self.proc.poll() is not None
                err = self.proc.stderr.read(_START_ERROR_CHARS).decode(errors="replace") if exited else ""
                self.close()
                raise SandboxError(f"the warm grading sandbox did not start: {err.strip() or 'timed out'}")
            ready, _, _ = select.select([self.proc.stdout], [], [], _TICK)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), _READ)
                if chunk:
                    messages = self._runner_messages(chunk, lambda _: None)
                    self.ready = any(isinstance(m, protocol.RunnerReady) for m in messages)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _runner_messages(self, chunk: bytes, on_child) -> list[protocol.Message]:
        """The runner's messages in `chunk`; the child's bytes go to `on_child`.

        Raises SandboxError when the stream is not frames (the runner is broken).
        """
        try:
            frames = self.frames.feed(chunk)
        except protocol.ProtocolError as exc:
            self.close()
            raise SandboxError(f"the warm grading sandbox sent {exc}") from None
        messages = []
        for kind, payload in frames:
            if kind == protocol.CHILD:
                on_child(payload)
                continue
            try:
                message = protocol.decode(payload, protocol.RUNNER_MESSAGES)
            except protocol.ProtocolError:
                continue
            if message is not None:
                messages.append(message)
        return messages

    def run(self, job: protocol.JobMessage, limits: Limits) -> RunResult:
        """Run one job in a fresh child sandbox and watch it like a fresh sandbox."""
        self.wait_ready()
        monitor = Monitor(self.proc, limits)
        try:
            self.proc.stdin.write(protocol.encode(job))
            self.proc.stdin.flush()
        except OSError:
            self.close()
            raise SandboxError("the warm grading sandbox is gone") from None
        exits: list[protocol.Exit] = []

        def on_stdout(chunk: bytes) -> None:
            exits.extend(m for m in self._runner_messages(chunk, monitor.feed) if isinstance(m, protocol.Exit))

        def stop() -> bool:
            try:
                self.proc.stdin.write(protocol.encode(protocol.Kill()))
                self.proc.stdin.flush()
            except OSError:
                pass
            return False  # the runner reports the job's end: go on reading

        try:
            monitor.loop(on_stdout, lambda: bool(exits), stop, limits.warm_stop_grace)
        except TimeoutError:
            self.close()
        if not exits:
            self.close()  # the runner itself failed: the next notebook gets a new one
            if not monitor.result.started:
                raise SandboxError("the warm grading sandbox stopped: "
                                   + monitor.result.stderr[-_STOP_ERROR_CHARS:])
        else:
            monitor.exit_status(exits[0].code)
        return monitor.result

    def close(self) -> None:
        kill_process(self.proc)
