"""Sandbox slots: an unprivileged user id and the cgroups of each sandbox that runs at the same time.

Run as root, each sandbox slot drops its notebooks to a user id of its own (:class:`UidSlot`,
``UID_BASE + k``), so that the process limit counts that notebook's processes alone; where
the cgroup v1 memory and pids controllers are writable, the slot also gets a cgroup
(:class:`SlotCgroup`) that caps the memory and processes of everything it starts together.
Run as a normal user, there are no slots: bubblewrap's user namespace does the isolating.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from autograder.sandbox.result import SandboxError

__all__ = ["UID_BASE", "UID_SLOTS", "is_root", "UidSlot", "SlotCgroup"]

#: Root only: the first of the unprivileged user ids the sandboxes run as.
UID_BASE = int(os.environ.get("BNGRADE_SANDBOX_UID", "61000"))
#: How many sandboxes may run at once on this machine.
UID_SLOTS = 256
#: Tries, and the pause between them, while a cgroup's processes die or its folder is removed.
_RETRIES, _PAUSE = 50, 0.02


def is_root() -> bool:
    return os.geteuid() == 0


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
        for _ in range(_RETRIES):
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
            time.sleep(_PAUSE)

    def close(self) -> None:
        self.kill_all()
        for path in self.paths.values():
            for _ in range(_RETRIES):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(_PAUSE)
