"""The grading sandbox: run one notebook's cells under bubblewrap, and watch it from outside.

Every submission is hostile until graded. Each one runs in a fresh `bubblewrap
<https://github.com/containers/bubblewrap>`_ sandbox (Debian's ``bwrap``) that:

- has no network (its own, empty network namespace), no IPC or process view of the host
  (its own IPC and PID namespaces: when it ends, every process it started ends with it);
- sees a read-only file system made of the system's ``/usr``, the Python interpreter's
  standard library (its ``site-packages`` hidden), the packages its assignment may import
  (NumPy; PyTorch for ``bn-torch`` only) and exactly these project files:
  ``bnlib/__init__.py``, ``bnlib/gradcheck.py``, ``autograder/__init__.py``,
  ``autograder/probe.py``, ``autograder/scenarios*.py`` and ``autograder/executor.py``.
  Not ``solutions/``, not the judge, not the gradebook, not other submissions: they do not
  exist inside;
- can write only two small private RAM disks, ``/scratch`` (its working folder) and ``/tmp``;
- runs under limits: wall time per cell (interrupted, then killed) and per notebook
  (killed), address space (``RLIMIT_AS``), processes (``RLIMIT_NPROC``), output kept.

Run as root, the sandboxed process also drops to an unprivileged user id of its own
(61000 + slot by default; one per concurrently running sandbox, reserved across processes
with an abstract socket), so that the process limit counts its processes alone; and where the
cgroup v1 memory/pids controllers are writable, each slot gets a cgroup that caps the memory
and processes of everything it starts together. Run as a normal user, bubblewrap uses an
unprivileged user namespace (the process limit then counts per namespace) and cgroups are
skipped: the other limits still hold.

The notebook's code runs in :mod:`autograder.executor`, which speaks newline-delimited JSON
on its standard output; :class:`Sandbox` reads it with deadlines and caps, kills the whole
sandbox when a limit is passed, and returns a :class:`RunResult`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import executor

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

#: Files of this project that a sandbox may read (relative to the repository), beyond the
#: scenario modules found next to the probe.
SANDBOX_FILES = ("bnlib/__init__.py", "bnlib/gradcheck.py", "autograder/__init__.py",
                 "autograder/probe.py", "autograder/executor.py")
#: Where those files and the allowed packages appear inside the sandbox.
LIB, SITE, SCRATCH = "/sandbox/lib", "/sandbox/site", "/scratch"
CHANNEL = "/tmp/bngrade-channel"
#: Top-level packages a notebook may import, per kind of assignment.
PACKAGES = {
    "numpy": ("numpy",),
    "torch": ("numpy", "torch", "torchgen", "typing_extensions"),
}
#: Root only: the first of the unprivileged user ids the sandboxes run as.
UID_BASE = int(os.environ.get("BNGRADE_SANDBOX_UID", "61000"))
UID_SLOTS = 256


class SandboxError(RuntimeError):
    """The grader's own machinery failed (not the student's notebook): nothing is graded."""


@dataclass(frozen=True)
class Limits:
    """What one notebook may use.

    Args:
        cell_timeout: seconds a cell may run before it is interrupted (TimeoutError in the
            cell, the notebook goes on); killed ``grace`` seconds later if it does not stop.
            Default: 30, like nbgrader's ``Execute.timeout``.
        notebook_timeout: seconds for the whole notebook, then the sandbox is killed.
            Default: 300.
        memory: bytes of address space per process (and of memory per slot, with cgroups).
            Default: 3 GiB (PyTorch alone maps about 0.8 GiB).
        processes: processes and threads per sandbox. Default: 32.
        output: characters of output kept per cell (the rest is counted, then dropped).
            Default: 100,000.
        disk: bytes of each private RAM disk (/scratch, /tmp). Default: 64 MiB.
        protocol: bytes the grader reads from one sandbox at most. Default: 256 MiB.
        grace: seconds between a cell's interruption and the kill. Default: 5.
    """

    cell_timeout: float = 30.0
    notebook_timeout: float = 300.0
    memory: int = 3 * 2**30
    processes: int = 32
    output: int = 100_000
    disk: int = 64 * 2**20
    protocol: int = 256 * 2**20
    grace: float = 5.0

    def for_executor(self) -> dict:
        return {"memory": self.memory, "processes": self.processes, "file_size": self.disk,
                "open_files": 256}


@dataclass
class RunResult:
    """What came back from one sandboxed run (all of it untrusted data from the notebook)."""

    cells: dict[int, dict] = field(default_factory=dict)      # index -> {outputs, events, secs}
    records: dict[str, bytes] = field(default_factory=dict)   # channel file name -> bytes
    started: bool = False          # the executor said 'ready' (before any student code ran)
    finished: bool = False         # it said 'done' after the last cell
    current_cell: int | None = None  # the cell that was running when the run ended early
    killed_for: str | None = None  # 'cell-timeout', 'notebook-timeout', 'protocol', 'output'
    exit_code: int | None = None
    exit_signal: int | None = None
    oom_killed: bool = False       # the slot's memory cgroup killed a process
    pids_limited: bool = False     # the slot's pids cgroup refused a fork
    problems: list[str] = field(default_factory=list)  # protocol trouble, oversized records
    stderr: str = ""               # bubblewrap's own messages (students cannot write here)
    wall: float = 0.0

    def events(self) -> list[tuple[int, str]]:
        return [(i, e) for i, c in sorted(self.cells.items()) for e in c.get("events", [])]


# ---------------------------------------------------------------- what the sandbox sees
def python_paths() -> tuple[str, list[str], list[str]]:
    """The base interpreter, the folders it needs, and its site-packages folders to hide."""
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    prefix = os.path.realpath(sys.base_prefix)
    stdlib = sysconfig.get_path("stdlib", vars={"installed_base": prefix, "base": prefix})
    needed = [prefix] if not prefix.startswith("/usr") else []
    hide = []
    for scheme in ("posix_prefix", "posix_local", "deb_system"):
        try:
            for key in ("purelib", "platlib"):
                p = sysconfig.get_path(key, scheme, vars={"base": prefix, "platbase": prefix})
                if p and os.path.isdir(p) and p not in hide and not p.startswith(os.path.realpath(sys.prefix) + "/"):
                    hide.append(os.path.realpath(p))
        except KeyError:
            continue
    for p in ("/usr/lib/python3/dist-packages", f"/usr/local/lib/python{sys.version_info.major}.{sys.version_info.minor}/dist-packages",
              f"/usr/local/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"):
        if os.path.isdir(p) and p not in hide:
            hide.append(p)
    if not os.path.isdir(stdlib):
        raise SandboxError(f"cannot find the standard library of {exe}")
    return exe, needed, hide


def package_dirs(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(host path, name inside SITE) for each package, plus its auditwheel `.libs` folder."""
    out = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise SandboxError(f"package {name!r} is not installed in {sys.prefix}")
        if spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0])
            out.append((str(path), name))
            libs = path.parent / f"{name}.libs"
            if libs.is_dir():
                out.append((str(libs), libs.name))
        else:
            out.append((str(spec.origin), Path(str(spec.origin)).name))
    return out


def project_files() -> list[tuple[str, str]]:
    """(host path, path inside LIB) for the project files a notebook may import."""
    files = list(SANDBOX_FILES)
    files += sorted(f"autograder/{p.name}" for p in PACKAGE_DIR.glob("scenarios*.py"))
    if (PACKAGE_DIR / "scenarios").is_dir():
        files += sorted(f"autograder/scenarios/{p.name}" for p in (PACKAGE_DIR / "scenarios").glob("*.py"))
    return [(str(REPO_DIR / f), f) for f in files if (REPO_DIR / f).is_file()]


def _root_symlinks() -> list[str]:
    """Mirror the host's /bin, /lib, ... (symlinks into /usr on merged-/usr systems, or folders)."""
    args = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def is_root() -> bool:
    return os.geteuid() == 0


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if not path:
        raise SandboxError("bubblewrap (`bwrap`) is not installed: run `make setup`, or "
                           "`apt-get install bubblewrap` as root")
    return path


def bwrap_args(kind: str, limits: Limits) -> list[str]:
    """The bubblewrap command line for a notebook of `kind` ('numpy' or 'torch')."""
    exe, needed, hide = python_paths()
    args = [bwrap_path(), "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if is_root():
        # bubblewrap runs privileged and keeps only what the executor needs to drop to its
        # own unprivileged user before any student code runs.
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--disable-userns"]
    env = {"HOME": SCRATCH, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--ro-bind", "/usr", "/usr", *_root_symlinks()]
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"):
        args += ["--ro-bind-try", path, path]
    for path in needed:
        args += ["--ro-bind", path, path]
    for path in hide:
        args += ["--tmpfs", path]
    for src, name in package_dirs(PACKAGES[kind]):
        args += ["--ro-bind", src, f"{SITE}/{name}"]
    for src, rel in project_files():
        args += ["--ro-bind", src, f"{LIB}/{rel}"]
    # bubblewrap copies the host's mode onto the folders it creates above a bind (e.g. /root,
    # 0700): open them up, or the unprivileged sandbox user could not reach what is bound.
    dests = [args[i + 2] for i, a in enumerate(args) if a == "--ro-bind"]
    parents = sorted({str(p) for d in dests for p in Path(d).parents if str(p) != "/"}
                     - {d for d in dests})
    for path in parents:
        if not any(path == d or path.startswith(d + "/") for d in dests):
            args += ["--chmod", "0755", path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for path in ("/tmp", SCRATCH, "/dev/shm"):
        args += ["--perms", "1777", "--size", str(limits.disk), "--tmpfs", path]
    args += ["--chdir", SCRATCH, "--", exe, "-I", "-S", "-c",
             f"import sys; sys.path[:0] = [{LIB!r}, {SITE!r}]; "
             "from autograder.executor import main; main()"]
    return args


# ---------------------------------------------------------------- uid slots and cgroups
class UidSlot:
    """An unprivileged user id reserved for one sandbox at a time on this machine.

    The reservation is an abstract Unix socket named after the uid: exclusive per network
    namespace, released by the kernel when its process dies, and it leaves no file behind.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for uid in range(UID_BASE, UID_BASE + UID_SLOTS):
            try:
                self.sock.bind(f"\0bngrade-uid-{uid}")
            except OSError:
                continue
            self.uid = uid
            return
        self.sock.close()
        raise SandboxError(f"all {UID_SLOTS} sandbox user ids from {UID_BASE} are in use")

    def close(self) -> None:
        self.sock.close()


class SlotCgroup:
    """cgroup v1 memory and pids limits shared by everything one slot's sandbox starts.

    Created under this process's own cgroup, only where that is writable (root, cgroup v1);
    otherwise `active` is False and the rlimits alone apply.
    """

    CONTROLLERS = ("memory", "pids")

    def __init__(self, name: str, memory: int, pids: int) -> None:
        self.paths: dict[str, Path] = {}
        if not is_root() or os.environ.get("BNGRADE_CGROUPS", "auto") == "off":
            return
        own = {}
        try:
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                for c in controllers.split(","):
                    own[c] = path
        except OSError:
            return
        try:
            for c in self.CONTROLLERS:
                base = Path("/sys/fs/cgroup") / c
                if c not in own or not (base / "cgroup.procs").exists():
                    raise OSError(f"no cgroup v1 {c} controller")
                path = base / own[c].lstrip("/") / name
                path.mkdir(exist_ok=True)
                self.paths[c] = path
            self._kill_all()
            (self.paths["memory"] / "memory.limit_in_bytes").write_text(str(memory))
            (self.paths["pids"] / "pids.max").write_text(str(pids))
        except OSError:
            self.close()
            self.paths = {}

    @property
    def active(self) -> bool:
        return bool(self.paths)

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv`, made to join this cgroup before it starts (a shell writes its own pid)."""
        if not self.active:
            return argv
        joins = "; ".join(f'echo $$ > "{p}/cgroup.procs"' for p in self.paths.values())
        return ["/bin/sh", "-c", f'{joins} && exec "$@"', "sh", *argv]

    def counters(self) -> tuple[int, int]:
        """(OOM kills, refused forks) so far."""
        oom = refused = 0
        try:
            for line in (self.paths["memory"] / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill "):
                    oom = int(line.split()[1])
            events = (self.paths["pids"] / "pids.events").read_text().split()
            refused = int(events[1]) if len(events) > 1 else 0
        except (OSError, KeyError, ValueError):
            pass
        return oom, refused

    def _kill_all(self) -> None:
        for _ in range(50):
            pids = set()
            for path in self.paths.values():
                try:
                    pids |= {int(p) for p in (path / "cgroup.procs").read_text().split()}
                except OSError:
                    pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)

    def close(self) -> None:
        self._kill_all()
        for path in self.paths.values():
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


# ---------------------------------------------------------------- running one notebook
class Sandbox:
    """A reusable sandbox slot: one notebook at a time, each in a fresh bubblewrap sandbox.

    >>> with Sandbox() as box:                                  # doctest: +SKIP
    ...     result = box.run([{"index": 0, "source": "print(1 + 1)"}], kind="numpy")
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.uid_slot = UidSlot() if is_root() else None
        self.uid = self.uid_slot.uid if self.uid_slot else None
        self.cgroup = SlotCgroup(f"bngrade-{self.uid if self.uid else os.getpid()}",
                                 self.limits.memory, self.limits.processes)
        self._argv: dict[str, list[str]] = {}

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.cgroup.close()
        if self.uid_slot:
            self.uid_slot.close()

    def run(self, cells: list[dict], kind: str = "numpy", seed: int = 0,
            limits: Limits | None = None) -> RunResult:
        """Run `cells` ([{index, source}], code cells in order) in a fresh sandbox.

        Raises SandboxError when the sandbox itself could not start.
        """
        limits = limits or self.limits
        if kind not in PACKAGES:
            raise ValueError(f"unknown sandbox kind {kind!r}: expected one of {sorted(PACKAGES)}")
        if kind not in self._argv:
            self._argv[kind] = bwrap_args(kind, limits)
        job = {"cells": cells, "cell_timeout": limits.cell_timeout, "output_limit": limits.output,
               "channel": CHANNEL, "cwd": SCRATCH, "seed": seed, "uid": self.uid,
               "limits": limits.for_executor()}
        oom0, refused0 = self.cgroup.counters()
        proc = subprocess.Popen(self.cgroup.wrap(self._argv[kind]), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True)
        try:
            result = _Monitor(proc, limits).run(json.dumps(job).encode())
        finally:
            _kill(proc)
            self.cgroup._kill_all()
        oom1, refused1 = self.cgroup.counters()
        result.oom_killed = oom1 > oom0
        result.pids_limited = refused1 > refused0
        if not result.started:
            raise SandboxError("the grading sandbox did not start: "
                               + (result.stderr.strip() or f"exit code {result.exit_code}"))
        return result


def _kill(proc: subprocess.Popen) -> None:
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


class _Monitor:
    """Feed the job in, read the messages out, enforce the deadlines and the caps."""

    def __init__(self, proc: subprocess.Popen, limits: Limits) -> None:
        self.proc, self.limits = proc, limits
        self.result = RunResult()
        self.buffer = bytearray()
        self.stderr = bytearray()
        self.read = 0
        self.cell_started: float | None = None

    def run(self, job: bytes) -> RunResult:
        start = time.monotonic()
        r = self.result
        try:
            self.proc.stdin.write(job)
            self.proc.stdin.close()
        except OSError:
            pass
        sel = selectors.DefaultSelector()
        for stream in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        notebook_deadline = start + self.limits.notebook_timeout
        open_streams = 2
        while open_streams and r.killed_for is None:
            now = time.monotonic()
            deadline = notebook_deadline
            if self.cell_started is not None:
                deadline = min(deadline, self.cell_started + self.limits.cell_timeout + self.limits.grace)
            if now >= deadline:
                r.killed_for = "notebook-timeout" if deadline == notebook_deadline else "cell-timeout"
                break
            for key, _ in sel.select(timeout=min(deadline - now, 1.0)):
                try:
                    chunk = os.read(key.fileobj.fileno(), 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                elif key.fileobj is self.proc.stderr:
                    if len(self.stderr) < 64_000:
                        self.stderr += chunk[:64_000 - len(self.stderr)]
                else:
                    self.read += len(chunk)
                    if self.read > self.limits.protocol:
                        r.killed_for = "output"
                        break
                    self._feed(chunk)
                    if r.killed_for:
                        break
        sel.close()
        _kill(self.proc)
        status = self.proc.returncode
        if status is not None:
            # bubblewrap exits with its child's status, or 128 + N when a signal N killed it
            if status < 0:
                r.exit_signal = -status
            elif status > 128:
                r.exit_signal = status - 128
            else:
                r.exit_code = status
        r.stderr = self.stderr.decode(errors="replace")
        r.wall = time.monotonic() - start
        return r

    def _feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > 128 * 2**20:
                    self.result.killed_for = "protocol"
                return
            line = bytes(self.buffer[:end])
            del self.buffer[:end + 1]
            self._message(line)

    def _message(self, line: bytes) -> None:
        r = self.result
        try:
            msg = json.loads(line)
            if not isinstance(msg, dict) or msg.get("p") != executor.PROTOCOL:
                raise ValueError("not a protocol message")
            kind = msg["t"]
        except (ValueError, KeyError, TypeError):
            if len(r.problems) < 5:
                r.problems.append("the notebook wrote garbage into the grader's channel")
            return
        if kind == "ready":
            r.started = True
        elif kind == "start":
            r.current_cell = _as_int(msg.get("i"))
            self.cell_started = time.monotonic()
        elif kind == "end":
            index = _as_int(msg.get("i"))
            outputs = msg.get("outputs")
            if index is None or not isinstance(outputs, list):
                return
            events = [str(e) for e in msg.get("events", []) if isinstance(e, str)][:10]
            r.cells[index] = {"outputs": outputs, "events": events, "secs": msg.get("secs")}
            r.current_cell = None
            self.cell_started = None
        elif kind == "record":
            name = str(msg.get("name", ""))
            try:
                import base64
                r.records[name] = base64.b64decode(str(msg.get("data", "")), validate=True)
            except ValueError:
                r.problems.append(f"record {name!r} could not be read")
        elif kind == "record-too-large":
            r.problems.append(f"record {str(msg.get('name'))[:80]!r} was too large to keep")
        elif kind == "done":
            r.finished = True


def _as_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def describe_setup() -> dict:
    """How sandboxes are made on this machine (for logs, the report, and the tests)."""
    box = Sandbox()
    try:
        return {"bwrap": bwrap_path(), "root": is_root(), "uid": box.uid,
                "cgroups": box.cgroup.active, **dataclasses.asdict(box.limits)}
    finally:
        box.close()
