"""The lean notebook runner: executes one student's code cells INSIDE the grading sandbox.

This module runs in the sandbox (see :mod:`autograder.sandbox`), next to the student's code,
so it imports only the standard library and trusts nothing it sees afterwards. It replaces
the Jupyter kernel nbgrader would start for each notebook: a plain Python process that

1. reads one job (:class:`autograder.inside.protocol.JobMessage`: the code cells, the limits)
   from its standard input;
2. sets its resource limits, drops to the sandbox's unprivileged user when it starts as
   root, and sends its standard streams to ``/dev/null``;
3. runs the cells in order in one namespace, like a kernel: ``print`` output and the value
   of a cell's last expression are captured (bounded), an exception becomes an ``error``
   output and the next cell still runs, a cell that runs past its time limit is
   interrupted (``TimeoutError`` in its outputs);
4. after each cell, forwards the records that :mod:`autograder.inside.probe` wrote into the
   channel folder (``$BNGRADE_CHANNEL``);
5. reports all this as the messages of :mod:`autograder.inside.protocol` on the protocol pipe
   (its original standard output), then exits without running the student's ``atexit`` hooks.

The trusted side reads those messages as untrusted data: a notebook can forge any of them,
which gains it nothing, because scores come only from the judge's verdicts on the records,
and a record can only pass by holding the right answers.

IPython syntax: ``%time``, ``%timeit`` (a few runs), ``%%time`` and ``%%timeit`` run their
code; ``%matplotlib``, ``%load_ext``, ``%reload_ext``, ``%autoreload``, ``%config`` are
ignored; any other magic or ``!shell`` line makes its cell fail with a message that says so.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import errno
import io
import linecache
import os
import re
import resource
import select
import signal
import sys
import time
import traceback

from autograder.inside import protocol
from autograder.inside.protocol import JobMessage

#: Magics that change nothing a grader needs: dropped.
IGNORED_MAGICS = {"matplotlib", "load_ext", "reload_ext", "autoreload", "config", "precision"}
#: Magics that time their code: the code runs (a few times for timeit).
TIMING_MAGICS = {"time", "timeit"}
#: How often ``%timeit`` runs its statement.
TIMEIT_REPEATS = 3

# What one output item keeps, within the cell's output limit: a value's repr, an exception's
# name and message, the traceback's frames (as a kernel shows them) and lines.
REPR_CHARS, ENAME_CHARS, EVALUE_CHARS = 20_000, 200, 4000
TRACEBACK_FRAMES, TRACEBACK_LINES = 60, 200
#: Words of the note that ends a cell's outputs when some were dropped (the grader looks for them).
DROPPED_MARK = "dropped by the grader"
#: The end of a setup failure's traceback that a warm runner's child reports.
SETUP_ERROR_CHARS = 2000
#: The notebook's working folder, and the private RAM disks every sandbox has (new ones for
#: each notebook of a warm runner: :func:`fresh_sandbox`).
SCRATCH = "/scratch"
RAM_DISKS = ("/tmp", SCRATCH, "/dev/shm")
#: Folders a notebook may use: a file error elsewhere is reported as an attempt outside them.
OWN_FOLDERS = (f"{SCRATCH}/", "/dev/shm/", "/proc/self/")


class CellTimeout(BaseException):
    """Raised inside a cell that ran past its time limit (BaseException: `except Exception` cannot swallow it)."""


# ---------------------------------------------------------------- outputs of one cell
class CellOutputs:
    """The outputs of one cell, in nbformat's shape, bounded to `limit` characters in all."""

    def __init__(self, limit: int) -> None:
        self.items: list[dict] = []
        self.limit = limit
        self.size = 0
        self.dropped = 0

    def _room(self, text: str) -> str:
        room = max(self.limit - self.size, 0)
        if len(text) > room:
            self.dropped += len(text) - room
            text = text[:room]
        self.size += len(text)
        return text

    def stream(self, name: str, text: str) -> None:
        text = self._room(text)
        if not text:
            return
        last = self.items[-1] if self.items else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self.items.append({"output_type": "stream", "name": name, "text": text})

    def data(self, output_type: str, text: str, count: int | None = None) -> None:
        item = {"output_type": output_type, "data": {"text/plain": self._room(text)}, "metadata": {}}
        if output_type == "execute_result":
            item["execution_count"] = count
        self.items.append(item)

    def error(self, ename: str, evalue: str, tb: list[str]) -> None:
        tb = [self._room(line) for line in tb[-TRACEBACK_FRAMES:]]
        self.items.append({"output_type": "error", "ename": self._room(ename)[:ENAME_CHARS],
                           "evalue": self._room(evalue)[:EVALUE_CHARS], "traceback": tb})

    def finish(self) -> list[dict]:
        if self.dropped:
            self.items.append({"output_type": "stream", "name": "stdout",
                               "text": f"\n[... {self.dropped:,} characters of output {DROPPED_MARK} ...]\n"})
        return self.items


class BoundedStream(io.TextIOBase):
    """`sys.stdout` / `sys.stderr` during a cell: text goes into the cell's bounded outputs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.outputs: CellOutputs | None = None

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.outputs is not None:
            self.outputs.stream(self.name, text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


# ---------------------------------------------------------------- IPython syntax
_MAGIC = re.compile(r"^(?P<indent>\s*)(?P<kind>%%|%|!)(?P<name>[A-Za-z_]\w*)?(?P<rest>.*)$")


class UnsupportedSyntax(Exception):
    """A magic or shell escape the grader cannot run."""


def translate_ipython(source: str) -> str:
    """Turn the IPython syntax students commonly leave in a cell into plain Python.

    Raises UnsupportedSyntax for magics and shell escapes a grader cannot honour.
    """
    lines = source.split("\n")
    first = _MAGIC.match(lines[0]) if lines else None
    if first and first["kind"] == "%%":
        name = first["name"] or ""
        if name in TIMING_MAGICS:
            return "\n".join(lines[1:])
        raise UnsupportedSyntax(f"the cell magic %%{name} is not available in the grader: remove it")
    out = []
    for line in lines:
        m = _MAGIC.match(line)
        if not m or m["kind"] == "%%":
            out.append(line)
            continue
        name = m["name"] or ""
        if m["kind"] == "!":
            raise UnsupportedSyntax("shell commands (!...) do not run in the grader: remove them")
        if name in IGNORED_MAGICS:
            out.append(m["indent"] + "pass")
        elif name in TIMING_MAGICS:
            stmt = m["rest"].strip()
            # drop %timeit's own options, e.g. `-n 10 -r 3`
            stmt = re.sub(r"^(-\w+\s+(\d+\s+)?)*", "", stmt)
            repeats = TIMEIT_REPEATS if name == "timeit" else 1
            out.append(f"{m['indent']}__bngrade_time__({stmt!r}, globals(), locals(), {repeats})")
        else:
            raise UnsupportedSyntax(f"the magic %{name} is not available in the grader: remove it")
    return "\n".join(out)


def _time_statement(stmt: str, globals_: dict, locals_: dict, repeats: int):
    """What `%time stmt` and `%timeit stmt` do here: run, print the wall time, return the value."""
    code = compile(stmt, "<timed>", "eval") if _is_expression(stmt) else compile(stmt, "<timed>", "exec")
    value, best = None, float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        value = eval(code, globals_, locals_)
        best = min(best, time.perf_counter() - start)
    print(f"Wall time: {best * 1e3:.3g} ms" + (f" (best of {repeats})" if repeats > 1 else ""))
    return value


def _is_expression(stmt: str) -> bool:
    try:
        ast.parse(stmt, mode="eval")
    except SyntaxError:
        return False
    return True


# ---------------------------------------------------------------- running cells
class Kernel:
    """One notebook's namespace and the machinery to run its cells in order."""

    def __init__(self, job: JobMessage, proto_fd: int) -> None:
        self.job = job
        self.proto_fd = proto_fd
        self.pid = os.getpid()
        self.timeout = job.cell_timeout
        self.records_sent: dict[str, tuple] = {}
        self.record_bytes = 0
        self.namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
        self.count = 0
        self.stdout = BoundedStream("stdout")
        self.stderr = BoundedStream("stderr")
        self.armed = False
        builtins.display = self._display  # type: ignore[attr-defined]
        builtins.__bngrade_time__ = _time_statement  # type: ignore[attr-defined]

    # -- the protocol
    def send(self, message: protocol.Message) -> None:
        if os.getpid() != self.pid:  # a process the notebook forked never speaks for it
            os._exit(0)
        _write_all(self.proto_fd, protocol.encode(message))

    def _display(self, *objects, **_kwargs) -> None:
        outputs = self.stdout.outputs
        if outputs is not None:
            for obj in objects:
                outputs.data("display_data", _safe_repr(obj))

    def _on_alarm(self, signum, frame) -> None:
        if self.armed:
            # keep interrupting every half second, in case the cell catches it
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            raise CellTimeout()

    # -- one cell
    def run_cell(self, index: int, source: str) -> None:
        self.count += 1
        filename = f"<cell {index}>"
        outputs = CellOutputs(self.job.output)
        events: list[str] = []
        self.stdout.outputs = self.stderr.outputs = outputs
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self.send(protocol.CellStart(index))
        started = time.monotonic()
        try:
            body, last = self._compile(source, filename)
            signal.signal(signal.SIGALRM, self._on_alarm)
            self.armed = True
            signal.setitimer(signal.ITIMER_REAL, self.timeout)
            try:
                exec(body, self.namespace)
                if last is not None:
                    value = eval(last, self.namespace)
                    if value is not None:
                        self.namespace["_"] = value
                        outputs.data("execute_result", _safe_repr(value), self.count)
            finally:
                self.armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except CellTimeout:
            events.append(protocol.TIMEOUT)
            outputs.error("TimeoutError", f"this cell ran for more than {self.timeout:g} s and was "
                          "interrupted by the grader (an infinite loop, or far too much work?)", [])
        except UnsupportedSyntax as exc:
            outputs.error("UnsupportedSyntax", str(exc), [f"UnsupportedSyntax: {exc}"])
        except BaseException as exc:  # noqa: BLE001 - a kernel reports every exception and goes on
            events.extend(_classify(exc))
            outputs.error(type(exc).__name__, _safe_str(exc), _format_traceback(exc, filename))
        finally:
            self.armed = False
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            self.stdout.outputs = self.stderr.outputs = None
        if os.getpid() != self.pid:
            os._exit(0)
        self.send(protocol.CellEnd(index, outputs.finish(), events, round(time.monotonic() - started, 4), self.count))
        self.send_records()

    def _compile(self, source: str, filename: str):
        source = translate_ipython(source)
        lines = source.splitlines(True)
        linecache.cache[filename] = (len(source), None, lines, filename)
        tree = ast.parse(source, filename=filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body.pop().value), filename, "eval")
        return compile(tree, filename, "exec"), last

    # -- the probe's records
    def send_records(self) -> None:
        channel, limit = self.job.channel, self.job.record
        if not channel or not os.path.isdir(channel):
            return
        try:
            names = sorted(os.listdir(channel))[:self.job.channel_files]
        except OSError:
            return
        for name in names:
            path = os.path.join(channel, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
            if self.records_sent.get(name) == stamp or not os.path.isfile(path):
                continue
            self.records_sent[name] = stamp
            if st.st_size > limit or self.record_bytes + st.st_size > self.job.records:
                self.send(protocol.RecordTooLarge(name, st.st_size))
                continue
            try:
                with open(path, "rb") as f:
                    data = f.read(limit + 1)
            except OSError:
                continue
            self.record_bytes += len(data)
            self.send(protocol.RecordFile(name, data))


def _classify(exc: BaseException) -> list[str]:
    """Name what an exception says about the run (:data:`autograder.inside.protocol.EVENTS`)."""
    if isinstance(exc, MemoryError):
        return [protocol.MEMORY]
    if isinstance(exc, SystemExit):
        return [protocol.SYSTEM_EXIT]
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN and "fork" in "".join(
            traceback.format_tb(exc.__traceback__)):
        return [protocol.PROCESS_LIMIT]
    filename = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    if isinstance(filename, str) and filename.startswith("/") and not filename.startswith(OWN_FOLDERS):
        return [protocol.file_event(filename[:200])]
    if type(exc).__name__ == "gaierror" or (
            isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)):
        return [protocol.NETWORK]
    return []


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)[:4000]
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return "<the exception could not be printed>"


def _safe_repr(value) -> str:
    try:
        text = repr(value)
    except CellTimeout:
        raise
    except BaseException as exc:  # noqa: BLE001
        text = f"<repr failed: {type(exc).__name__}>"
    return text if len(text) <= REPR_CHARS else text[:REPR_CHARS] + " ..."


def _format_traceback(exc: BaseException, filename: str) -> list[str]:
    """The traceback without the grader's own frames, as a kernel would show it."""
    try:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        lines = traceback.format_exception(type(exc), exc, tb)
        return "".join(lines).rstrip("\n").split("\n")[-TRACEBACK_LINES:]
    except BaseException:  # noqa: BLE001
        return [f"{type(exc).__name__}: {_safe_str(exc)}"]


# ---------------------------------------------------------------- the process around it
def apply_limits(limits: dict[str, int]) -> None:
    """Set this process's resource limits (inherited by anything it forks)."""
    names = {"memory": resource.RLIMIT_AS, "processes": resource.RLIMIT_NPROC,
             "file_size": resource.RLIMIT_FSIZE, "open_files": resource.RLIMIT_NOFILE,
             "cpu": resource.RLIMIT_CPU}
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, which in names.items():
        value = limits.get(key)
        if value:
            resource.setrlimit(which, (int(value), int(value)))


def drop_privileges(uid: int | None) -> None:
    """From root inside the sandbox, become `uid` (no groups, no capabilities, no new privileges)."""
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    try:  # PR_SET_NO_NEW_PRIVS: nothing exec'd can gain privileges (setuid binaries)
        ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)
    except OSError:
        pass
    if os.getuid() == 0 and uid is not None:
        raise SystemExit("could not drop root privileges")


def isolate_streams() -> int:
    """Keep the protocol pipe on a private descriptor; stdin, stdout, stderr become /dev/null."""
    proto = os.dup(1)
    os.set_inheritable(proto, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return proto


def run_job(job: JobMessage, proto_fd: int) -> None:
    """Run every code cell of `job` and report them on `proto_fd`; never returns."""
    os.environ[protocol.CHANNEL_ENV] = job.channel
    os.environ[protocol.SEED_ENV] = str(job.seed)
    if job.channel:
        os.makedirs(job.channel, exist_ok=True)
    os.chdir(job.cwd)
    kernel = Kernel(job, proto_fd)
    kernel.send(protocol.Ready(os.getpid(), os.getuid()))
    for cell in job.cells:
        kernel.run_cell(cell["index"], cell["source"])
    kernel.send(protocol.Done())
    os._exit(0)


def parse_job(data: bytes) -> JobMessage:
    """The job in `data`; SystemExit (before any student code) when it is not one."""
    try:
        job = protocol.decode(data, protocol.GRADER_MESSAGES)
    except protocol.ProtocolError as exc:
        raise SystemExit(f"the job is not a protocol message: {exc}") from None
    if not isinstance(job, JobMessage):
        raise SystemExit("the job is not a job message")
    return job


def read_job(fd: int = 0) -> JobMessage:
    """The job on `fd`, read to its end (at most :data:`autograder.inside.protocol.MAX_JOB` bytes)."""
    chunks, size = [], 0
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > protocol.MAX_JOB:
            raise SystemExit("job too large")
    return parse_job(b"".join(chunks))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[written:]


# ---------------------------------------------------------------- the warm runner (fork server)
# Linux's constants (sched.h, mount.h, prctl.h).
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18
PR_SET_PDEATHSIG = 1


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def fresh_sandbox(disk: int) -> None:
    """In a child of the warm runner: new namespaces and private RAM disks, before any student code.

    Called as root with the capabilities bubblewrap kept for the warm runner; afterwards this
    process is PID 1 of a new PID namespace (everything it starts dies with it), with its own
    network, IPC and host name, a mount namespace where /tmp, /scratch and /dev/shm are new
    empty RAM disks (nothing the previous notebook wrote is there) and /proc shows only itself.
    """
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    pid = os.fork()  # the first process in the new PID namespace is PID 1
    if pid:
        # the intermediate process: outlive the notebook (SIGTERM: kill it), report how it ended
        signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
        _, status = os.waitpid(pid, 0)
        os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status) & 0x7F)
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    for path in RAM_DISKS:
        options = f"size={disk},mode=1777".encode()
        _check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options), f"mount tmpfs {path}")
    _check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV, None), "mount proc")


def _frame(fd: int, kind: bytes, payload: bytes) -> None:
    """Warm runner -> grader: one frame (:func:`autograder.inside.protocol.encode_frame`)."""
    _write_all(fd, protocol.encode_frame(kind, payload))


def _say(fd: int, message: protocol.Message) -> None:
    """The warm runner's own message, in a runner frame (a notebook cannot forge one)."""
    _frame(fd, protocol.RUNNER, protocol.encode(message))


def zygote(preload: list[str]) -> None:
    """The warm runner: import the heavy modules once, then fork a fresh sandbox per notebook.

    Runs as root inside a bubblewrap sandbox that has no student data; it never runs student
    code itself. Each job (a :class:`~autograder.inside.protocol.JobMessage` line on stdin) is
    run by a child in new namespaces (:func:`fresh_sandbox`) that drops to the slot's user, like
    a fresh bubblewrap sandbox, but with NumPy (and PyTorch) already imported. A
    :class:`~autograder.inside.protocol.Kill` line kills the running job.
    """
    out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    for name in preload:
        __import__(name)
    _say(out, protocol.RunnerReady(list(preload)))
    stdin = os.fdopen(0, "rb", buffering=0)
    pending = b""
    while True:
        line, pending = _read_line(stdin, pending)
        if line is None:
            os._exit(0)
        try:
            job = protocol.decode(line, protocol.GRADER_MESSAGES)
        except protocol.ProtocolError:
            continue
        if not isinstance(job, JobMessage):
            continue
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                os.close(out)
                os.dup2(devnull, 0)
                fresh_sandbox(job.disk)
                apply_limits(job.rlimits)
                drop_privileges(job.uid)
                # after the change of user, which clears it: die with the intermediate process
                _libc().prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            except BaseException:  # noqa: BLE001 - no student code has run: report and stop
                os.write(w, protocol.encode(protocol.SetupFailed(traceback.format_exc()[-SETUP_ERROR_CHARS:])))
                os._exit(70)
            run_job(job, w)
        os.close(w)
        pending = _serve(out, r, pid, stdin, pending)


def _read_line(stdin, pending: bytes):
    while b"\n" not in pending:
        chunk = stdin.read(1 << 16)
        if not chunk:
            return None, b""
        pending += chunk
    line, _, rest = pending.partition(b"\n")
    return line, rest


def _serve(out: int, r: int, pid: int, stdin, pending: bytes) -> bytes:
    """Forward one job's messages; kill it when the grader asks; report how it ended."""
    open_r = True
    while open_r:
        ready, _, _ = select.select([r, stdin], [], [])
        if r in ready:
            chunk = os.read(r, protocol.MAX_FRAME)
            if chunk:
                _frame(out, protocol.CHILD, chunk)
            else:
                open_r = False
        if stdin in ready:
            chunk = stdin.read(1 << 16)
            if not chunk:
                os.kill(pid, signal.SIGKILL)
                os._exit(0)
            lines, pending = protocol.split_lines(pending + chunk)
            if any(_is_kill(line) for line in lines):
                os.kill(pid, signal.SIGTERM)  # the intermediate kills the notebook's PID 1
    os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    _frame(out, protocol.CHILD, b"\n")  # ends a line the notebook may have left half written
    _say(out, protocol.Exit(code))
    return pending


def _is_kill(line: bytes) -> bool:
    try:
        return isinstance(protocol.decode(line, protocol.GRADER_MESSAGES), protocol.Kill)
    except protocol.ProtocolError:
        return False


def main() -> None:
    """Set up (errors go to stderr, for the grader's log), then run the job."""
    errors = os.dup(2)
    try:
        job = read_job(0)
        proto = isolate_streams()
        apply_limits(job.rlimits)
        drop_privileges(job.uid)
        os.close(errors)
    except BaseException:  # noqa: BLE001 - no student code has run yet: report and stop
        os.write(errors, traceback.format_exc().encode())
        os._exit(70)
    run_job(job, proto)


if __name__ == "__main__":
    main()
