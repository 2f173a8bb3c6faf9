"""The grading sandbox: run one notebook's cells under bubblewrap, and watch it from outside.

Every submission is hostile until graded. Each one runs in a sandbox of its own, made with
`bubblewrap <https://github.com/containers/bubblewrap>`_ (Debian's ``bwrap``): a new
bubblewrap sandbox per notebook, or, as root, a warm runner per slot that forks each notebook
into new namespaces (see :class:`Sandbox`). Either way the notebook:

- has no network (its own, empty network namespace), no IPC or process view of the host
  (its own IPC and PID namespaces: when it ends, every process it started ends with it);
- sees a read-only file system made of the system's ``/usr``, the Python interpreter's
  standard library (its ``site-packages`` hidden), the packages its assignment may import
  (NumPy; PyTorch for ``bn-torch`` only) and exactly these project files:
  ``bnlib/__init__.py``, ``bnlib/gradcheck.py``, ``autograder/__init__.py`` and the package
  ``autograder/inside/`` (the probe, the scenarios and the cell runner), mounted whole.
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

The notebook's code runs in :mod:`autograder.inside.executor`, which speaks newline-delimited JSON
on its standard output; :class:`Sandbox` reads it with deadlines and caps, kills the whole
sandbox when a limit is passed, and returns a :class:`RunResult`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import select
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

from autograder.inside import executor
from autograder.paths import REPO_DIR

#: Files of this project that a sandbox may read (relative to the repository), beyond the
#: package :mod:`autograder.inside`, which is mounted whole.
SANDBOX_FILES = ("bnlib/__init__.py", "bnlib/gradcheck.py", "autograder/__init__.py")
#: The sandbox-side package: everything in it runs in the student's process.
INSIDE = "autograder/inside"
#: Where those files and the allowed packages appear inside the sandbox.
LIB, SITE, SCRATCH = "/sandbox/lib", "/sandbox/site", "/scratch"
CHANNEL = "/tmp/bngrade-channel"
#: Distributions a notebook may import, per kind of assignment (with what they require to run:
#: PyTorch needs sympy, networkx, jinja2... for autograd functions and modules).
PACKAGES = {
    "numpy": ("numpy",),
    "torch": ("numpy", "torch"),
}
#: Requirements left out: build tools PyTorch lists but a notebook never needs.
NOT_NEEDED = {"setuptools", "pip", "wheel"}
#: What the warm runner imports once, per kind of assignment.
PRELOAD = {"numpy": ("numpy", "autograder.inside.probe"),
           "torch": ("numpy", "torch", "torch._dynamo", "sympy", "autograder.inside.probe")}
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


def requirement_closure(names: tuple[str, ...]) -> list[str]:
    """The top-level modules of distributions `names` and of everything they require (no extras)."""
    import importlib.metadata as md
    import re as _re

    seen, modules, todo = set(), [], list(names)
    while todo:
        dist_name = _re.split(r"[\s;<>=!~\[]", todo.pop(0), maxsplit=1)[0].lower().replace("_", "-")
        if dist_name in seen or dist_name in NOT_NEEDED:
            continue
        seen.add(dist_name)
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            raise SandboxError(f"{dist_name!r} is not installed in {sys.prefix}") from None
        for top in _top_level(dist):
            if top not in modules:
                modules.append(top)
        todo += [r for r in (dist.requires or []) if "extra ==" not in r]
    return modules


def _top_level(dist) -> list[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return [t for t in text.split() if t and not t.startswith("_")] or text.split()
    tops = []
    for f in dist.files or []:
        first = f.parts[0]
        if first.endswith((".dist-info", ".data", ".libs")) or first in ("..", "__pycache__"):
            continue
        name = first[:-3] if first.endswith(".py") and len(f.parts) == 1 else first
        if name.isidentifier() and name not in tops:
            tops.append(name)
    return tops


def package_dirs(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(host path, name inside SITE) for each package, plus its auditwheel `.libs` folder."""
    out = []
    for name in requirement_closure(names):
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
    files += sorted(str(p.relative_to(REPO_DIR)) for p in (REPO_DIR / INSIDE).rglob("*.py")
                    if "__pycache__" not in p.parts)
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


def bwrap_args(kind: str, limits: Limits, warm: bool = False) -> list[str]:
    """The bubblewrap command line for a notebook of `kind` ('numpy' or 'torch').

    With `warm`, the command is the warm runner (:func:`autograder.inside.executor.zygote`), which
    keeps the capabilities it needs to give each notebook new namespaces (root only).
    """
    exe, needed, hide = python_paths()
    args = [bwrap_path(), "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if warm:
        for cap in ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID"):
            args += ["--cap-add", cap]
    elif is_root():
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
    start = (f"from autograder.inside.executor import zygote; zygote({list(PRELOAD[kind])!r})" if warm
             else "from autograder.inside.executor import main; main()")
    args += ["--chdir", SCRATCH, "--", exe, "-I", "-S", "-B", "-c",
             f"import sys; sys.path[:0] = [{LIB!r}, {SITE!r}]; {start}"]
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
            self.kill_all()
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

    def kill_all(self) -> None:
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
        self.kill_all()
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
def warm_available() -> bool:
    """Whether the warm runner can be used here: it needs root (to give each notebook new namespaces)."""
    return is_root() and os.environ.get("BNGRADE_WARM", "1") != "0"


class Sandbox:
    """A sandbox slot: one notebook at a time, each in a sandbox of its own.

    Two ways to give each notebook a fresh sandbox, with the same isolation:

    - ``warm`` (the default as root): one bubblewrap sandbox per slot and kind of assignment
      holds a warm runner that has imported NumPy (and PyTorch) once; for each notebook it
      forks a child that enters new PID, mount, network, IPC and UTS namespaces, mounts new
      empty RAM disks on /tmp, /scratch and /dev/shm and a /proc of its own, sets the limits
      and drops to the slot's unprivileged user before the first cell. Nothing of one
      notebook (files, processes, memory) reaches the next, and ``import torch`` is paid
      once per slot instead of once per notebook.
    - fresh (``warm=False``, and always for a normal user): a new bubblewrap sandbox per notebook.

    >>> with Sandbox() as box:                                  # doctest: +SKIP
    ...     result = box.run([{"index": 0, "source": "print(1 + 1)"}], kind="numpy")
    """

    def __init__(self, limits: Limits | None = None, warm: bool | None = None) -> None:
        self.limits = limits or Limits()
        self.warm = warm_available() if warm is None else (warm and is_root())
        self.uid_slot = UidSlot() if is_root() else None
        self.uid = self.uid_slot.uid if self.uid_slot else None
        # the cgroup leaves room above RLIMIT_AS, so that a notebook that asks for too much
        # memory gets a MemoryError in its cell before the kernel's OOM killer steps in
        self.cgroup = SlotCgroup(f"bngrade-{self.uid if self.uid else os.getpid()}",
                                 self.limits.memory + self.limits.memory // 4 + 2**29, self.limits.processes)
        self._argv: dict[tuple[str, bool], list[str]] = {}
        self._zygotes: dict[str, _Zygote] = {}
        self.closed = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True
        for zygote in self._zygotes.values():
            zygote.close()
        self._zygotes.clear()
        self.cgroup.close()
        if self.uid_slot:
            self.uid_slot.close()

    def prestart(self, kind: str) -> _Zygote | None:
        """Start the warm runner for `kind` now (it imports while the caller does other work)."""
        if not self.warm:
            return None
        if kind not in PACKAGES:
            raise ValueError(f"unknown sandbox kind {kind!r}: expected one of {sorted(PACKAGES)}")
        zygote = self._zygotes.get(kind)
        if zygote is None or not zygote.alive():
            if zygote is not None:
                zygote.close()
            zygote = self._zygotes[kind] = _Zygote(self.argv(kind, True))
        return zygote

    def argv(self, kind: str, warm: bool) -> list[str]:
        if (kind, warm) not in self._argv:
            self._argv[kind, warm] = self.cgroup.wrap(bwrap_args(kind, self.limits, warm=warm))
        return self._argv[kind, warm]

    def run(self, cells: list[dict], kind: str = "numpy", seed: int = 0,
            limits: Limits | None = None) -> RunResult:
        """Run `cells` ([{index, source}], code cells in order) in a fresh sandbox.

        Raises SandboxError when the sandbox itself could not start.
        """
        limits = limits or self.limits
        if kind not in PACKAGES:
            raise ValueError(f"unknown sandbox kind {kind!r}: expected one of {sorted(PACKAGES)}")
        job = {"t": "job", "cells": cells, "cell_timeout": limits.cell_timeout, "output_limit": limits.output,
               "channel": CHANNEL, "cwd": SCRATCH, "seed": seed, "uid": self.uid, "disk": limits.disk,
               "limits": limits.for_executor()}
        oom0, refused0 = self.cgroup.counters()
        if self.warm:
            zygote = self.prestart(kind)
            result = zygote.run(json.dumps(job).encode(), limits)
            if not zygote.alive():
                self._zygotes.pop(kind).close()
        else:
            proc = subprocess.Popen(self.argv(kind, False), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
            try:
                result = _Monitor(proc, limits).run(json.dumps(job).encode())
            finally:
                _kill(proc)
                self.cgroup.kill_all()
        oom1, refused1 = self.cgroup.counters()
        result.oom_killed = oom1 > oom0
        result.pids_limited = refused1 > refused0
        if not result.started:
            raise SandboxError("the grading sandbox did not start: "
                               + (result.stderr.strip() or f"exit code {result.exit_code}"))
        return result


def preflight() -> None:
    """Check that a sandbox starts on this machine; raises SandboxError saying why not."""
    with Sandbox(Limits(cell_timeout=30, notebook_timeout=60), warm=False) as box:
        result = box.run([{"index": 0, "source": "import numpy\nprint(numpy.ones(2).sum())"}])
    out = result.cells.get(0, {}).get("outputs", [])
    if not out or out[0].get("text") != "2.0\n":
        raise SandboxError(f"the grading sandbox cannot run NumPy on this machine: {out or result.stderr}")


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
    """Read a notebook's messages with deadlines and caps; stop it when a limit is passed.

    In the fresh mode the messages are bubblewrap's standard output and stopping is a kill;
    in the warm mode they arrive in the warm runner's frames (:meth:`frames`) and stopping
    is a request to the runner.
    """

    def __init__(self, proc: subprocess.Popen, limits: Limits) -> None:
        self.proc, self.limits = proc, limits
        self.result = RunResult()
        self.buffer = bytearray()
        self.stderr = bytearray()
        self.read = 0
        self.cell_started: float | None = None
        self.stop_requested = False

    # -- the loop, shared by both modes
    def loop(self, on_stdout, finished, stop, stop_grace: float) -> None:
        start = time.monotonic()
        r = self.result
        sel = selectors.DefaultSelector()
        for stream in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        notebook_deadline = start + self.limits.notebook_timeout
        stop_deadline = None
        try:
            while not finished():
                now = time.monotonic()
                if stop_deadline is None:
                    deadline = notebook_deadline
                    if self.cell_started is not None:
                        deadline = min(deadline, self.cell_started + self.limits.cell_timeout + self.limits.grace)
                    if r.killed_for is None and now >= deadline:
                        r.killed_for = "notebook-timeout" if deadline == notebook_deadline else "cell-timeout"
                    if r.killed_for is not None:
                        if stop():  # stopped for good: nothing more to read
                            return
                        stop_deadline = now + stop_grace
                        continue
                elif now >= stop_deadline:
                    raise TimeoutError("the sandbox did not stop")
                timeout = (stop_deadline if stop_deadline is not None else deadline) - now
                events = sel.select(timeout=max(0.0, min(timeout, 1.0)))
                if not events and self.proc.poll() is not None and not sel.get_map():
                    break
                for key, _ in events:
                    try:
                        chunk = os.read(key.fileobj.fileno(), 1 << 20)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(key.fileobj)
                        if not sel.get_map():
                            return
                    elif key.fileobj is self.proc.stderr:
                        if len(self.stderr) < 64_000:
                            self.stderr += chunk[:64_000 - len(self.stderr)]
                    else:
                        on_stdout(chunk)
        finally:
            sel.close()
            r.stderr = self.stderr.decode(errors="replace")
            r.wall = time.monotonic() - start

    # -- fresh mode
    def run(self, job: bytes) -> RunResult:
        try:
            self.proc.stdin.write(job)
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.loop(self._feed, lambda: False, lambda: _kill(self.proc) or True, 5.0)
        except TimeoutError:
            pass
        _kill(self.proc)
        self._exit_status(self.proc.returncode)
        return self.result

    def _exit_status(self, status: int | None) -> None:
        r = self.result
        if status is not None:
            # bubblewrap exits with its child's status, or 128 + N when a signal N killed it
            if status < 0:
                r.exit_signal = -status
            elif status > 128:
                r.exit_signal = status - 128
            else:
                r.exit_code = status

    def _feed(self, chunk: bytes) -> None:
        r = self.result
        self.read += len(chunk)
        if self.read > self.limits.protocol:
            r.killed_for = r.killed_for or "output"
            return
        self.buffer += chunk
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > 128 * 2**20:
                    r.killed_for = r.killed_for or "protocol"
                    self.buffer.clear()
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
            if line.strip() and len(r.problems) < 5:
                r.problems.append("the notebook wrote garbage into the grader's channel")
            return
        if kind == "ready":
            r.started = True
        elif kind == "setup-failed":
            r.stderr += str(msg.get("error", ""))[:4000]
        elif kind == "start":
            r.current_cell = _as_int(msg.get("i"))
            self.cell_started = time.monotonic()
        elif kind == "end":
            index = _as_int(msg.get("i"))
            outputs = msg.get("outputs")
            if index is None or not isinstance(outputs, list):
                return
            events = [str(e) for e in msg.get("events", []) if isinstance(e, str)][:10]
            r.cells[index] = {"outputs": outputs, "events": events, "secs": msg.get("secs"),
                              "count": _as_int(msg.get("count"))}
            r.current_cell = None
            self.cell_started = None
        elif kind == "record":
            name = str(msg.get("name", ""))
            try:
                r.records[name] = base64.b64decode(str(msg.get("data", "")), validate=True)
            except ValueError:
                r.problems.append(f"record {name[:80]!r} could not be read")
        elif kind == "record-too-large":
            r.problems.append(f"record {str(msg.get('name'))[:80]!r} was too large to keep")
        elif kind == "done":
            r.finished = True


class _Zygote:
    """The warm runner of one slot and kind (see :class:`Sandbox`), and its frames."""

    def __init__(self, argv: list[str], start_timeout: float = 180.0) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, close_fds=True)
        self.frames = bytearray()
        self.messages: list[dict] = []
        self.stderr = bytearray()
        self.start_timeout = start_timeout
        self.ready = False

    def wait_ready(self) -> None:
        """Wait for the runner's imports (it starts them as soon as it is created)."""
        if self.ready:
            return
        deadline = time.monotonic() + self.start_timeout
        while not any(m.get("t") == "ready" for m in self.messages):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                err = self.proc.stderr.read(4000).decode(errors="replace") if self.proc.poll() is not None else ""
                self.close()
                raise SandboxError(f"the warm grading sandbox did not start: {err.strip() or 'timed out'}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    continue
                self._decode(chunk, lambda _: None)
        self.messages.clear()
        self.ready = True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _decode(self, chunk: bytes, on_child) -> None:
        self.frames += chunk
        while len(self.frames) >= 5:
            kind, size = self.frames[:1], int.from_bytes(self.frames[1:5], "big")
            if len(self.frames) < 5 + size:
                return
            payload = bytes(self.frames[5:5 + size])
            del self.frames[:5 + size]
            if kind == b"C":
                on_child(payload)
            else:
                try:
                    self.messages.append(json.loads(payload))
                except ValueError:
                    pass

    def run(self, job: bytes, limits: Limits) -> RunResult:
        self.wait_ready()
        monitor = _Monitor(self.proc, limits)
        self.messages.clear()
        try:
            self.proc.stdin.write(job + b"\n")
            self.proc.stdin.flush()
        except OSError:
            self.close()
            raise SandboxError("the warm grading sandbox is gone") from None

        def stop() -> None:
            try:
                self.proc.stdin.write(b'{"t": "kill"}\n')
                self.proc.stdin.flush()
            except OSError:
                pass

        exited = lambda: any(m.get("t") == "exit" for m in self.messages)  # noqa: E731
        try:
            monitor.loop(lambda chunk: self._decode(chunk, monitor._feed), exited, stop, 10.0)
        except TimeoutError:
            self.close()
        monitor.result.stderr += self.stderr.decode(errors="replace")
        exit_message = next((m for m in self.messages if m.get("t") == "exit"), None)
        if exit_message is None:
            self.close()  # the runner itself failed: the next notebook gets a new one
            if not monitor.result.started:
                raise SandboxError("the warm grading sandbox stopped: " + monitor.result.stderr[-2000:])
        else:
            monitor._exit_status(_as_int(exit_message.get("code")))
        return monitor.result

    def close(self) -> None:
        _kill(self.proc)


def _as_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def running_sandboxes() -> list[int]:
    """Pids of every grading sandbox process on this machine (bubblewrap, the runner, its children).

    Empty when grading is done: a check for strays after a run, used by the tests.
    """
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry.name}/status") as f:
                status = f.read()
        except OSError:
            continue
        uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), -1)
        state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
        if state == "Z":
            continue
        if (UID_BASE <= uid < UID_BASE + UID_SLOTS or b"autograder.inside.executor" in cmdline
                or (b"bwrap" in cmdline.split(b"\0")[0] and LIB.encode() in cmdline)):
            found.append(int(entry.name))
    return found
