"""Run a function on several local processes joined by ``torch.distributed``, bounded in time.

``run_processes(fn, world_size, *args)`` starts ``world_size`` fresh Python processes
(``torch.multiprocessing``, start method "spawn"), joins them into one gloo process group
that talks over the loopback interface only (127.0.0.1), calls ``fn(rank, world_size,
*args)`` in each, and returns what each returned, in rank order. It is what a course machine
offers instead of a cluster: the chapter "Batch norm at scale and in deployment" trains over
two processes with it, and the tests of ``bnlib.torch.SyncBatchNorm`` run on it.

Every run ends: a process that raises stops the others and the error (with its traceback)
is raised here; a run still going after ``timeout`` seconds (a collective waiting for a
process that never comes) is killed, every process of it, and raises :class:`TimeoutError`.
Rendezvous file and results live in a temporary folder that is removed afterwards.

``fn`` must be importable by the new processes (a module-level function of an importable
module, not a lambda) and return what ``torch.save`` can store with ``weights_only``:
tensors, numbers, strings, and lists, tuples and dicts of them.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["run_processes", "LOOPBACK"]

#: The network interface gloo is confined to: the loopback one, 127.0.0.1.
LOOPBACK = "lo"


def _entry(rank: int, fn: Callable[..., Any], world_size: int, folder: str, timeout: float, threads: int,
           backend: str, args: tuple) -> None:
    """What each new process runs: join the group, call ``fn``, save its result, leave the group."""
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK
    torch.set_num_threads(threads)
    if backend == "nccl":  # one GPU per process
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend,
        init_method=f"file://{Path(folder) / 'rendezvous'}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout),
    )
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(folder) / f"result-{rank}.pt")
    finally:
        dist.destroy_process_group()
    # Done, and the result is on disk: leave now. A spawned process otherwise ends through the
    # interpreter's full teardown, which takes seconds with torch loaded on a busy machine.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _stop(context: mp.ProcessContext) -> None:
    """Kill every process of ``context`` still alive, wait for each to end, remove its error files.

    (``torch.multiprocessing`` has each process that raises write its traceback to a file in
    the system's temporary folder, and never deletes it.)
    """
    for process in context.processes:
        if process.is_alive():
            process.kill()
    for process in context.processes:
        process.join()
    for name in context.error_files:
        Path(name).unlink(missing_ok=True)


def run_processes(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = 120.0,
    threads: int = 1,
    backend: str = "gloo",
) -> list[Any]:
    """``[fn(0, world_size, *args), ..., fn(world_size - 1, world_size, *args)]``, each in its own process.

    Args:
        fn: a module-level function ``fn(rank, world_size, *args)``; ``torch.distributed`` is
            initialized (the whole world) when it is called.
        world_size: how many processes.
        *args: passed to every call (pickled).
        timeout: seconds for the whole run, start-up included; also the limit of any one
            collective. Default: 120
        threads: ``torch.set_num_threads`` in each process. Default: 1
        backend: ``"gloo"`` (CPU tensors) or ``"nccl"`` (CUDA tensors; process ``rank`` uses
            GPU ``rank``, so ``world_size`` GPUs are needed). Default: ``"gloo"``

    Returns:
        What each process returned, in rank order.

    Raises:
        TimeoutError: the run took longer than ``timeout``; every process was killed.
        torch.multiprocessing.ProcessRaisedException: ``fn`` raised in a process (its
            traceback is in the message); the other processes were stopped.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="bn-processes-") as folder:
        context = mp.start_processes(
            _entry,
            args=(fn, world_size, folder, timeout, threads, backend, args),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        try:
            while not context.join(timeout=0.2):
                if time.monotonic() > deadline:
                    alive = [p.pid for p in context.processes if p.is_alive()]
                    raise TimeoutError(
                        f"{len(alive)} of {world_size} processes were still running after {timeout:g} s "
                        f"(a collective waiting for a process that never joined it?); all were killed"
                    )
        finally:
            _stop(context)
        return [torch.load(Path(folder) / f"result-{rank}.pt", weights_only=True) for rank in range(world_size)]
