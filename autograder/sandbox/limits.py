"""What one notebook may use, and how long the grader waits: every limit, cap and grace, once."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Every limit a sandboxed run is held to, and every grace the grader allows it.

    The first group limits the notebook (an instructor may change them: ``grade --timeout``,
    ``--notebook-timeout``, ``--memory``); the second caps what the grader reads from a run,
    which is all untrusted data; the third says how long the grader waits for its own
    machinery. The executor inside the sandbox gets the values it applies in its job
    (:class:`autograder.inside.protocol.JobMessage`), never defaults of its own.

    Args:
        cell_timeout: seconds a cell may run before it is interrupted (TimeoutError in the
            cell, the notebook goes on); killed ``grace`` seconds later if it does not stop.
            Default: 30, like nbgrader's ``Execute.timeout``.
        notebook_timeout: seconds for the whole notebook, then the sandbox is killed.
            Default: 300 (:data:`NOTEBOOK_FACTOR` times the cell's).
        memory: bytes of address space per process (and of memory per slot, with cgroups:
            :meth:`cgroup_memory`). Default: 3 GiB (PyTorch alone maps about 0.8 GiB).
        processes: processes and threads per sandbox. Default: 32.
        open_files: file descriptors per process. Default: 256.
        disk: bytes of each private RAM disk (/scratch, /tmp, /dev/shm), and of any file
            written. Default: 64 MiB.
        grace: seconds between a cell's interruption and the kill. Default: 5.
        output: characters of output kept per cell (the rest is counted, then dropped).
            Default: 100,000.
        protocol: bytes the grader reads from one sandbox at most. Default: 256 MiB.
        message: bytes of one protocol message (one line) at most. Default: 128 MiB.
        record: bytes of one probe record sent at most. Default: 32 MiB.
        records: bytes of probe records sent per notebook. Default: 128 MiB.
        channel_files: files of the probe's channel folder looked at after each cell.
            Default: 200.
        events: events kept per cell. Default: 10.
        problems: garbage lines on the protocol stream reported per run. Default: 5.
        stderr: bytes of bubblewrap's (or the warm runner's) own messages kept. Default: 64,000.
        stop_grace: seconds a stopped fresh sandbox gets to close its pipes. Default: 5.
        warm_stop_grace: seconds the warm runner gets to report a job it was told to kill,
            before the runner itself is killed. Default: 10.
        warm_start: seconds the warm runner may take to import NumPy and PyTorch. Default: 180.
    """

    #: A notebook's time limit, in cell time limits, when none is given.
    NOTEBOOK_FACTOR = 10

    cell_timeout: float = 30.0
    notebook_timeout: float = 300.0
    memory: int = 3 * 2**30
    processes: int = 32
    open_files: int = 256
    disk: int = 64 * 2**20
    grace: float = 5.0
    output: int = 100_000
    protocol: int = 256 * 2**20
    message: int = 128 * 2**20
    record: int = 32 * 2**20
    records: int = 128 * 2**20
    channel_files: int = 200
    events: int = 10
    problems: int = 5
    stderr: int = 64_000
    stop_grace: float = 5.0
    warm_stop_grace: float = 10.0
    warm_start: float = 180.0

    @classmethod
    def for_grading(cls, cell_timeout: float = cell_timeout, memory_mb: int = memory // 2**20,
                    notebook_timeout: float | None = None) -> Limits:
        """The limits ``grade`` runs under: a notebook gets :data:`NOTEBOOK_FACTOR` cells' time unless told."""
        return cls(cell_timeout=float(cell_timeout),
                   notebook_timeout=float(notebook_timeout or cls.NOTEBOOK_FACTOR * cell_timeout),
                   memory=int(memory_mb) * 2**20)

    def rlimits(self) -> dict[str, int]:
        """The resource limits the executor sets on itself (``resource.setrlimit``)."""
        return {"memory": self.memory, "processes": self.processes, "file_size": self.disk,
                "open_files": self.open_files}

    def cgroup_memory(self) -> int:
        """A slot's memory cgroup limit: room above RLIMIT_AS, so that a notebook that asks for
        too much memory gets a MemoryError in its cell before the kernel's OOM killer steps in."""
        return self.memory + self.memory // 4 + 2**29
