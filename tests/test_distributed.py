"""support.distributed: local processes joined by torch.distributed, and every run ends.

A process that raises, or a run that hangs, must come back as a clear error within the time
given, with every process it started ended and nothing left in the temporary folder.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as dist
from torch.multiprocessing import ProcessRaisedException

from support.distributed import run_processes


def gather_ranks(rank: int, world_size: int, extra: str) -> dict:
    """Every process sends its rank; returns what it gathered and the process's pid."""
    ranks = [torch.zeros(1) for _ in range(world_size)]
    dist.all_gather(ranks, torch.tensor([float(rank)]))
    return {"ranks": [int(r) for r in ranks], "world": dist.get_world_size(), "extra": extra,
            "backend": dist.get_backend(), "threads": torch.get_num_threads(), "pid": os.getpid()}


def one_raises(rank: int, world_size: int) -> None:
    if rank == 1:
        raise ValueError("process 1 found a bad slice")
    dist.barrier()  # process 0 waits for process 1, which never comes


def one_hangs(rank: int, world_size: int) -> None:
    if rank == 1:
        time.sleep(3600)
    dist.barrier()


def _is_resource_tracker(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker: one per parent, started by its first spawn, ends with it."""
    return "multiprocessing.resource_tracker" in " ".join(process.cmdline())


@pytest.fixture
def no_strays():
    """The test leaves no child process of this one alive and no new file in the temporary folder."""
    me = psutil.Process()
    before_children = {p.pid for p in me.children(recursive=True)}
    tmp = Path(tempfile.gettempdir())
    before_files = {p.name for p in tmp.glob("pytorch-errorfile-*")} | {p.name for p in tmp.glob("bn-processes-*")}
    yield
    alive = [p for p in me.children(recursive=True) if p.pid not in before_children and p.is_running()
             and p.status() != psutil.STATUS_ZOMBIE and not _is_resource_tracker(p)]
    assert not alive, f"processes left running: {[(p.pid, p.cmdline()[:3]) for p in alive]}"
    after = {p.name for p in tmp.glob("pytorch-errorfile-*")} | {p.name for p in tmp.glob("bn-processes-*")}
    assert after <= before_files, f"left in {tmp}: {sorted(after - before_files)}"


def test_every_process_runs_the_function_in_one_gloo_group(no_strays):
    results = run_processes(gather_ranks, 3, "hello", timeout=60)
    assert [r["ranks"] for r in results] == [[0, 1, 2]] * 3
    assert all(r["world"] == 3 and r["extra"] == "hello" and r["backend"] == "gloo" for r in results)
    assert all(r["threads"] == 1 for r in results)
    assert len({r["pid"] for r in results} | {os.getpid()}) == 4


def test_a_process_that_raises_stops_the_run_with_its_error(no_strays):
    start = time.monotonic()
    with pytest.raises(ProcessRaisedException, match="process 1 found a bad slice"):
        run_processes(one_raises, 2, timeout=60)
    assert time.monotonic() - start < 50, "the run waited for its timeout instead of stopping at the error"


def test_a_run_that_hangs_is_killed_at_its_timeout(no_strays):
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="still running after 12 s"):
        run_processes(one_hangs, 2, timeout=12)
    assert time.monotonic() - start < 20


def test_world_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        run_processes(gather_ranks, 0, "x")
