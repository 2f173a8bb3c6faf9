"""The class speed table: each student's ``BatchNorm1d`` timed against ``nn.BatchNorm1d`` (ungraded).

``python -m autograder grade ... --speed`` adds, for every ``bn-torch`` submission whose
``BatchNorm1d`` passed the graded checks of its training-mode output and gradients, one more
run in the grading sandbox: the notebook's definitions (its imports, functions, classes and
literal constants, as :func:`bnlib.bench.student.notebook_source` keeps them; no demonstrations, no
tests) followed by a call of :func:`autograder.inside.timing.measure`, which checks the layer once
more against ``nn.BatchNorm1d`` at the timing shape and then times both, forward and
forward+backward, side by side, in the same process, on one thread. This module is the trusted
side: it builds that run, and reads what it printed as untrusted data. The ratio (student's time over
PyTorch's; lower is faster) goes into ``grades.csv`` as the ungraded column ``speed_vs_nn``,
into the report's class speed table, and into the student's feedback.

The number is informational, never part of a score: it comes from inside the sandbox, where
the student's code runs too and could tamper with the timer. :func:`bnlib.bench.student.student_speed`
and ``python -m bnlib.bench --student`` time one notebook the same way outside the grader.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

import nbformat

from autograder.grading.jobs import Answer, Job, SpeedRequest, Status
from autograder.grading.process import scratch_folder
from autograder.inside import timing
from autograder.inside.timing import MARKER, SHAPE
from autograder.sandbox import RunResult, Sandbox

__all__ = ["SHAPE", "REQUIRED_PARTS", "MARKER", "cells", "parse", "time_submission", "cell_text", "not_timed"]

#: Graded parts a submission must pass before it is timed: its training-mode output and gradients.
REQUIRED_PARTS = ("module_train_output", "module_backward")
#: Characters of an error's message, and of the timing cell's own message, kept in an entry.
_ERROR_CHARS, _MESSAGE_CHARS = 200, 300
#: The entry's timed numbers: each must be a positive, finite number.
_NUMBERS = ("ratio", "forward_ratio", "seconds", "reference_seconds")


def not_timed(message: str, shape=SHAPE) -> dict:
    """A speed entry without a measurement, and why."""
    return {"ratio": None, "forward_ratio": None, "shape": list(shape), "message": message}


def cells(nb, class_name: str = "BatchNorm1d", request: SpeedRequest | None = None) -> list[dict]:
    """The sandbox's job: the notebook's definitions, then the timing cell.

    Raises ValueError (with a message for the table) when the definitions cannot be read.
    `request`: the shape and run time. Default: :class:`~autograder.grading.jobs.SpeedRequest`'s.
    """
    request = request or SpeedRequest()
    # imports torch: the report and the coordinator use this module without it
    from bnlib.bench.student import StudentKernelError, notebook_source  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bngrade-speed-", dir=scratch_folder()) as tmp:
        path = os.path.join(tmp, "submission.ipynb")
        nbformat.write(nb, path)
        try:
            definitions = notebook_source(path)
        except StudentKernelError as e:
            raise ValueError(f"not timed: {e}") from None
    timing_cell = (f"from {timing.__name__} import measure as __bngrade_measure__\n"
                   f"__bngrade_measure__({class_name}, shape={tuple(request.shape)!r}, "
                   f"min_run_time={request.min_run_time!r})\n")
    return [{"index": 0, "source": definitions}, {"index": 1, "source": timing_cell}]


def _outputs(run: RunResult, index: int) -> list:
    cell = run.cells.get(index)
    return [o for o in cell.outputs if isinstance(o, dict)] if cell else []


def parse(run: RunResult, shape=SHAPE) -> dict:
    """The speed entry from a sandboxed run of :func:`cells` (its output is untrusted data)."""
    if run.killed_for or not run.finished:
        return not_timed("not timed: the timing run did not finish (too slow, or it crashed)", shape)
    for item in _outputs(run, 0):
        if item.get("output_type") == "error":
            return not_timed(f"not timed: the notebook's definitions raised {item.get('ename')}: "
                             f"{str(item.get('evalue', ''))[:_ERROR_CHARS]}", shape)
    text = "".join(str(o.get("text", "")) for o in _outputs(run, 1) if o.get("output_type") == "stream")
    lines = [line[len(MARKER):] for line in text.splitlines() if line.startswith(MARKER)]
    if not lines:
        errors = [o for o in _outputs(run, 1) if o.get("output_type") == "error"]
        why = (f"{errors[0].get('ename')}: {str(errors[0].get('evalue', ''))[:_ERROR_CHARS]}" if errors
               else "no result")
        return not_timed(f"not timed: {why}", shape)
    try:
        data = json.loads(lines[-1])
        entry = not_timed(str(data.get("message", ""))[:_MESSAGE_CHARS], shape)
        for key in _NUMBERS:
            value = data.get(key)
            if value is not None:
                value = float(value)
                if not value > 0 or value != value or value == float("inf"):
                    raise ValueError(f"{key} is {value}")
            entry[key] = value
        return entry
    except (ValueError, TypeError, AttributeError) as e:
        return not_timed(f"not timed: the timing cell's result could not be read ({e})", shape)


def time_submission(nb, answer: Answer, job: Job, sandbox: Sandbox) -> dict:
    """The speed entry for one judged ``bn-torch`` notebook (never raises for the notebook's code).

    Raises SandboxError when the sandbox itself fails, like the graded run.
    """
    request = job.speed or SpeedRequest()
    shape = tuple(request.shape)
    if answer.status != Status.GRADED:
        return not_timed(f"not timed: the notebook's status is {answer.status}", shape)
    failed = [gid for gid in REQUIRED_PARTS if not (gid in answer.parts and answer.parts[gid].passed)]
    if failed:
        return not_timed(f"not timed: BatchNorm1d did not pass {', '.join(failed)}", shape)
    try:
        job_cells = cells(copy.deepcopy(nb), request=request)
    except ValueError as e:
        return not_timed(str(e), shape)
    run = sandbox.run(job_cells, kind="torch", seed=job.seed, limits=job.limits)
    return parse(run, shape)


def cell_text(entry: dict | None) -> str:
    """The CSV's and the report's cell: ``"1.35"`` (times nn.BatchNorm1d's), or empty when not timed."""
    if not entry or entry.get("ratio") is None:
        return ""
    return f"{entry['ratio']:.3g}"
