"""The class speed table: each student's ``BatchNorm1d`` timed against ``nn.BatchNorm1d`` (ungraded).

``python -m autograder grade ... --speed`` adds, for every ``bn-torch`` submission whose
``BatchNorm1d`` passed the graded checks of its training-mode output and gradients, one more
run in the grading sandbox: the notebook's definitions (its imports, functions, classes and
literal constants, as :func:`bnlib.bench.student.notebook_source` keeps them; no demonstrations, no
tests) followed by :func:`measure`, which checks the layer once more against
``nn.BatchNorm1d`` at the timing shape and then times both, forward and forward+backward,
side by side with the standard library's ``timeit``, in the same process, on one thread (so that the
other notebooks graded at the same time slow both alike). The ratio (student's time over
PyTorch's; lower is faster) goes into ``grades.csv`` as the ungraded column ``speed_vs_nn``,
into the report's class speed table, and into the student's feedback.

The number is informational, never part of a score: it comes from inside the sandbox, where
the student's code runs too and could tamper with the timer. :func:`bnlib.bench.student.student_speed`
and ``python -m bnlib.bench --student`` time one notebook the same way outside the grader.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
import textwrap

#: The batch timed: (N, C), float32 on the CPU.
SHAPE = (16384, 256)
#: Graded parts a submission must pass before it is timed: its training-mode output and gradients.
REQUIRED_PARTS = ("module_train_output", "module_backward")
#: Prefix of the line the timing cell prints.
MARKER = "BNGRADE-SPEED "


def measure(cls, shape=(16384, 256), min_run_time=0.2, rounds=2):  # runs INSIDE the sandbox: torch and stdlib only
    """Check ``cls`` against ``nn.BatchNorm1d`` at ``shape``, time both, print one MARKER line of JSON.

    Timed with the standard library's ``timeit`` (``torch.utils.benchmark`` imports build tools
    the sandbox does not offer), the two layers alternating, ``rounds`` times: the best time
    per call of each.
    """
    import json as _json
    import timeit as _timeit

    import torch

    torch.set_num_threads(1)
    out = {"ratio": None, "forward_ratio": None, "shape": list(shape), "message": ""}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * 3.0 + 1.5
    dy = torch.randn(*shape, generator=g)
    try:
        layers = {"nn": torch.nn.BatchNorm1d(shape[1]), "student": cls(shape[1])}
        results = {}
        for name, layer in layers.items():
            xi = x.clone().requires_grad_(True)
            y = layer(xi)
            y.backward(dy)
            results[name] = (y.detach(), xi.grad)
        (y_ref, dx_ref), (y, dx) = results["nn"], results["student"]
        if y.shape != y_ref.shape or dx is None or dx.shape != dx_ref.shape:
            out["message"] = "not timed: at this shape the output or dx has the wrong shape"
        elif not torch.allclose(y, y_ref, rtol=1e-4, atol=1e-4) or not torch.allclose(dx, dx_ref, rtol=1e-3,
                                                                                       atol=1e-4):
            out["message"] = "not timed: at this shape the output or dx differs from nn.BatchNorm1d's"
    except Exception as e:  # noqa: BLE001 - the student's code
        out["message"] = f"not timed: {type(e).__name__}: {str(e)[:200]}"
    if not out["message"]:
        statements = {"forward": "with torch.no_grad(): layer(x)",
                      "forward+backward": "layer.zero_grad(); x.grad = None; layer(x).backward(dy)"}
        timers, number, best = {}, {}, {}
        for mode, stmt in statements.items():
            for name, layer in layers.items():
                timers[mode, name] = _timeit.Timer(stmt, globals={"layer": layer, "torch": torch, "dy": dy,
                                                                  "x": x.clone().requires_grad_(True)})
                calls, seconds = timers[mode, name].autorange()  # also the warm-up
                number[mode, name] = max(1, int(calls * min_run_time / max(seconds, 1e-9)))
        for _ in range(rounds):
            for key, timer in timers.items():
                per_call = timer.timeit(number[key]) / number[key]
                best[key] = min(best.get(key, per_call), per_call)
        out["ratio"] = best["forward+backward", "student"] / best["forward+backward", "nn"]
        out["forward_ratio"] = best["forward", "student"] / best["forward", "nn"]
        out["seconds"] = best["forward+backward", "student"]
        out["reference_seconds"] = best["forward+backward", "nn"]
    print("BNGRADE-SPEED " + _json.dumps(out))


def not_timed(message: str, shape=SHAPE) -> dict:
    """A speed entry without a measurement, and why."""
    return {"ratio": None, "forward_ratio": None, "shape": list(shape), "message": message}


def cells(nb, class_name: str = "BatchNorm1d", shape=SHAPE, min_run_time: float = 0.2) -> list[dict]:
    """The sandbox's job: the notebook's definitions, then the timing cell.

    Raises ValueError (with a message for the table) when the definitions cannot be read.
    """
    import nbformat

    from bnlib.bench.student import StudentKernelError, notebook_source

    folder = os.environ.get("BNGRADE_SCRATCH") or None
    with tempfile.TemporaryDirectory(prefix="bngrade-speed-", dir=folder) as tmp:
        path = os.path.join(tmp, "submission.ipynb")
        nbformat.write(nb, path)
        try:
            definitions = notebook_source(path)
        except StudentKernelError as e:
            raise ValueError(f"not timed: {e}") from None
    timing = (textwrap.dedent(inspect.getsource(measure)) + "\n"
              + f"measure({class_name}, shape={tuple(shape)!r}, min_run_time={min_run_time!r})\n")
    return [{"index": 0, "source": definitions}, {"index": 1, "source": timing}]


def parse(run, shape=SHAPE) -> dict:
    """The speed entry from a sandboxed run of :func:`cells` (its output is untrusted data)."""
    if run.killed_for or not run.finished:
        return not_timed("not timed: the timing run did not finish (too slow, or it crashed)", shape)
    first = run.cells.get(0, {})
    for item in first.get("outputs", []):
        if isinstance(item, dict) and item.get("output_type") == "error":
            return not_timed(f"not timed: the notebook's definitions raised {item.get('ename')}: "
                             f"{str(item.get('evalue', ''))[:200]}", shape)
    text = "".join(str(o.get("text", "")) for o in run.cells.get(1, {}).get("outputs", [])
                   if isinstance(o, dict) and o.get("output_type") == "stream")
    lines = [line[len(MARKER):] for line in text.splitlines() if line.startswith(MARKER)]
    if not lines:
        errors = [o for o in run.cells.get(1, {}).get("outputs", [])
                  if isinstance(o, dict) and o.get("output_type") == "error"]
        why = f"{errors[0].get('ename')}: {str(errors[0].get('evalue', ''))[:200]}" if errors else "no result"
        return not_timed(f"not timed: {why}", shape)
    try:
        data = json.loads(lines[-1])
        entry = not_timed(str(data.get("message", ""))[:300], shape)
        for key in ("ratio", "forward_ratio", "seconds", "reference_seconds"):
            value = data.get(key)
            if value is not None:
                value = float(value)
                if not value > 0 or value != value or value == float("inf"):
                    raise ValueError(f"{key} is {value}")
            entry[key] = value
        return entry
    except (ValueError, TypeError, AttributeError) as e:
        return not_timed(f"not timed: the timing cell's result could not be read ({e})", shape)


def time_submission(nb, answer: dict, job: dict, sandbox) -> dict:
    """The speed entry for one judged ``bn-torch`` notebook (never raises for the notebook's code)."""
    from autograder.sandbox import Limits

    shape = tuple(job.get("speed_shape") or SHAPE)
    if answer.get("status") != "graded":
        return not_timed(f"not timed: the notebook's status is {answer.get('status')}", shape)
    parts = answer.get("parts", {})
    failed = [gid for gid in REQUIRED_PARTS if not parts.get(gid, {}).get("passed")]
    if failed:
        return not_timed(f"not timed: BatchNorm1d did not pass {', '.join(failed)}", shape)
    try:
        job_cells = cells(nb, shape=shape, min_run_time=float(job.get("speed_min_run_time", 0.2)))
    except ValueError as e:
        return not_timed(str(e), shape)
    limits = Limits(**job.get("limits", {}))
    run = sandbox.run(job_cells, kind="torch", seed=int(job["seed"]), limits=limits)
    return parse(run, shape)


def cell_text(entry: dict | None) -> str:
    """The CSV's and the report's cell: ``"1.35"`` (times nn.BatchNorm1d's), or empty when not timed."""
    if not entry or entry.get("ratio") is None:
        return ""
    return f"{entry['ratio']:.3g}"


__all__ = ["SHAPE", "REQUIRED_PARTS", "measure", "cells", "parse", "time_submission", "cell_text", "not_timed"]
