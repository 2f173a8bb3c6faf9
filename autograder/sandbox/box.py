"""A sandbox slot: one notebook at a time, each in a sandbox of its own, fresh or forked from a warm runner."""

from __future__ import annotations

import os
import subprocess

from autograder.inside import executor, protocol
from autograder.sandbox import slots
from autograder.sandbox.limits import Limits
from autograder.sandbox.monitor import Monitor, kill_process
from autograder.sandbox.mounts import CHANNEL, LIB, PACKAGES, SCRATCH, bwrap_args
from autograder.sandbox.result import RunResult, SandboxError
from autograder.sandbox.slots import UID_BASE, UID_SLOTS, SlotCgroup, UidSlot
from autograder.sandbox.zygote import WarmRunner

__all__ = ["Sandbox", "warm_available", "preflight", "running_sandboxes", "PREFLIGHT"]

#: The limits of the check that a sandbox starts: a minute, the default cell time limit.
PREFLIGHT = Limits(notebook_timeout=60)


def warm_available() -> bool:
    """Whether the warm runner can be used here: it needs root (to give each notebook new namespaces)."""
    return slots.is_root() and os.environ.get("BNGRADE_WARM", "1") != "0"


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

    Args:
        limits: what each notebook may use. Default: :class:`Limits`'s defaults.
        warm: use the warm runner. Default: where :func:`warm_available`.

    >>> with Sandbox() as box:                                  # doctest: +SKIP
    ...     result = box.run([{"index": 0, "source": "print(1 + 1)"}], kind="numpy")
    """

    def __init__(self, limits: Limits | None = None, warm: bool | None = None) -> None:
        self.limits = limits or Limits()
        self.warm = warm_available() if warm is None else (warm and slots.is_root())
        self.uid_slot = UidSlot() if slots.is_root() else None
        self.uid = self.uid_slot.uid if self.uid_slot else None
        self.cgroup = SlotCgroup(f"bngrade-{self.uid if self.uid else os.getpid()}",
                                 self.limits.cgroup_memory(), self.limits.processes)
        self._argv: dict[tuple[str, bool], list[str]] = {}
        self._runners: dict[str, WarmRunner] = {}
        self.closed = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()
        self.cgroup.close()
        if self.uid_slot:
            self.uid_slot.close()

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in PACKAGES:
            raise ValueError(f"unknown sandbox kind {kind!r}: expected one of {sorted(PACKAGES)}")

    def prestart(self, kind: str) -> WarmRunner | None:
        """Start the warm runner for `kind` now (it imports while the caller does other work)."""
        if not self.warm:
            return None
        self._check_kind(kind)
        runner = self._runners.get(kind)
        if runner is None or not runner.alive():
            if runner is not None:
                runner.close()
            runner = self._runners[kind] = WarmRunner(self.argv(kind, True), self.limits)
        return runner

    def argv(self, kind: str, warm: bool) -> list[str]:
        if (kind, warm) not in self._argv:
            self._argv[kind, warm] = self.cgroup.wrap(bwrap_args(kind, self.limits, warm=warm))
        return self._argv[kind, warm]

    def job(self, cells: list[dict], seed: int, limits: Limits) -> protocol.JobMessage:
        """The executor's job for `cells` under `limits` (in this slot, as its user)."""
        return protocol.JobMessage(cells=cells, seed=seed, cell_timeout=limits.cell_timeout, output=limits.output,
                                   record=limits.record, records=limits.records, channel_files=limits.channel_files,
                                   channel=CHANNEL, cwd=SCRATCH, uid=self.uid, disk=limits.disk,
                                   rlimits=limits.rlimits())

    def run(self, cells: list[dict], kind: str = "numpy", seed: int = 0,
            limits: Limits | None = None) -> RunResult:
        """Run `cells` ([{index, source}], code cells in order) in a fresh sandbox.

        Raises SandboxError when the sandbox itself could not start.
        """
        limits = limits or self.limits
        self._check_kind(kind)
        job = self.job(cells, seed, limits)
        oom0, refused0 = self.cgroup.counters()
        if self.warm:
            runner = self.prestart(kind)
            result = runner.run(job, limits)
            if not runner.alive():
                self._runners.pop(kind).close()
        else:
            proc = subprocess.Popen(self.argv(kind, False), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
            try:
                result = Monitor(proc, limits).run(job)
            finally:
                kill_process(proc)
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
    with Sandbox(PREFLIGHT, warm=False) as box:
        result = box.run([{"index": 0, "source": "import numpy\nprint(numpy.ones(2).sum())"}])
    cell = result.cells.get(0)
    out = cell.outputs if cell else []
    if not out or out[0].get("text") != "2.0\n":
        raise SandboxError(f"the grading sandbox cannot run NumPy on this machine: {out or result.stderr}")


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
        if (UID_BASE <= uid < UID_BASE + UID_SLOTS or executor.__name__.encode() in cmdline
                or (b"bwrap" in cmdline.split(b"\0")[0] and LIB.encode() in cmdline)):
            found.append(int(entry.name))
    return found
