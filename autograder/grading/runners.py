"""Where the grading tasks run: a pool of local worker processes, or an existing Dask cluster.

Both runners take the same tasks (:func:`autograder.grading.worker.grade_notebook` on a
:class:`~autograder.grading.jobs.Job` and the gradebook's bytes) and yield, as each finishes,
``(key, answer, error)``: the answer, or why the grader itself failed on that notebook (then
nothing is recorded for it, and a rerun grades it again). One broken notebook never stops
the others.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Hashable, Iterator

from autograder.grading import process, worker
from autograder.grading.jobs import Answer, Job
from autograder.sandbox import Limits, SandboxError

__all__ = ["LocalRunner", "DaskRunner", "GradeError"]

Outcome = tuple[Hashable, Answer | None, str | None]


class GradeError(RuntimeError):
    """The run cannot start (e.g. the Dask scheduler cannot be reached); the message says why."""


def _failure(exc: BaseException) -> str:
    """What the grader's own failure on one notebook was, in a line for the summary."""
    if isinstance(exc, SandboxError):
        return str(exc)
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


class LocalRunner:
    """A pool of local worker processes (one sandbox slot each), started with ``spawn``.

    Args:
        workers: how many notebooks run at once.
        scratch: the workers' scratch folder (removed afterwards).
        kinds: the kinds of assignment to grade: each worker starts their warm runners at once.
        limits: the slots' limits.
    """

    def __init__(self, workers: int, scratch: str, kinds: list[str], limits: Limits) -> None:
        self.workers, self.scratch, self.kinds, self.limits = workers, scratch, kinds, limits
        self.pool = None

    def __enter__(self) -> LocalRunner:
        os.makedirs(self.scratch, exist_ok=True)
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=process.init_process, initargs=(self.scratch, self.kinds, self.limits))
        return self

    def run(self, jobs: dict[Hashable, Job], gradebook: bytes) -> Iterator[Outcome]:
        futures = {self.pool.submit(worker.grade_notebook, job, gradebook): key for key, job in jobs.items()}
        for future in concurrent.futures.as_completed(futures):
            key = futures[future]
            try:
                yield key, future.result(), None
            except Exception as exc:  # noqa: BLE001 - a grader bug on one notebook stops only that one
                yield key, None, _failure(exc)

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        try:
            shutil.rmtree(self.scratch)
            os.rmdir(os.path.dirname(self.scratch))
        except OSError:
            pass


class DaskRunner:
    """The same tasks on an existing Dask cluster (``--scheduler tcp://host:8786``).

    The gradebook's bytes go to every worker once (scattered); each task refers to them.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.client = None

    def __enter__(self) -> DaskRunner:
        # distributed takes about a second to import: only a run with --scheduler pays for it
        from distributed import Client  # noqa: PLC0415

        try:
            self.client = Client(self.address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise GradeError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from None
        return self

    def run(self, jobs: dict[Hashable, Job], gradebook: bytes) -> Iterator[Outcome]:
        from distributed import as_completed  # noqa: PLC0415 - see __enter__

        shared = self.client.scatter(gradebook, broadcast=True)
        futures = {}
        for key, job in jobs.items():
            name = f"bngrade-{job.assignment}-{job.student_id}-{time.time_ns()}"
            futures[self.client.submit(worker.grade_notebook, job, shared, pure=False, key=name)] = key
        for future in as_completed(list(futures)):
            key = futures[future]
            try:
                yield key, future.result(), None
            except Exception as exc:  # noqa: BLE001 - a grader bug on one notebook stops only that one
                yield key, None, _failure(exc)

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            try:
                self.client.run(process.shutdown)
            except Exception:  # noqa: BLE001 - a worker that is gone has nothing to release
                pass
            self.client.close()
