"""``grade --speed`` inside the sandbox: a student's ``BatchNorm1d`` timed beside ``nn.BatchNorm1d``.

The timing cell that :mod:`autograder.output.speed` appends to a correct ``bn-torch`` notebook
calls :func:`measure` in the student's process, after the notebook's definitions. It checks
the student's layer once more against ``nn.BatchNorm1d`` at the timing shape, then times both,
forward and forward+backward, side by side with the standard library's ``timeit``, on one
thread (so that the other notebooks graded at the same time slow both alike), and prints one
line: :data:`MARKER` and a JSON object, which the trusted side reads as untrusted data.

Runs inside the sandbox (standard library and torch only). Nothing here is graded: the
student's code runs in the process that times it, and could tamper with the timer.
"""

from __future__ import annotations

import json
import timeit

__all__ = ["SHAPE", "MIN_RUN_TIME", "ROUNDS", "MARKER", "measure"]

#: The batch timed: (N, C), float32 on the CPU.
SHAPE = (16384, 256)
#: Seconds each timed statement runs per round, at least.
MIN_RUN_TIME = 0.2
#: Rounds of timing, the two layers alternating: the best time per call of each counts.
ROUNDS = 2
#: Prefix of the line :func:`measure` prints.
MARKER = "BNGRADE-SPEED "
#: How close the student's layer must be to nn.BatchNorm1d at the timing shape: output, dx.
OUTPUT_TOLERANCE, GRADIENT_TOLERANCE = (1e-4, 1e-4), (1e-3, 1e-4)


def measure(cls, shape=SHAPE, min_run_time=MIN_RUN_TIME, rounds=ROUNDS) -> None:
    """Check ``cls`` against ``nn.BatchNorm1d`` at ``shape``, time both, print one MARKER line of JSON.

    Timed with the standard library's ``timeit`` (``torch.utils.benchmark`` imports build tools
    the sandbox does not offer), the two layers alternating, ``rounds`` times: the best time
    per call of each.

    Args:
        cls: the student's layer class, built as ``cls(C)``.
        shape: the batch, ``(N, C)``. Default: :data:`SHAPE`.
        min_run_time: seconds each statement runs per round, at least. Default: 0.2.
        rounds: rounds of timing. Default: 2.
    """
    import torch  # noqa: PLC0415 - only the bn-torch sandbox has torch; the trusted side imports MARKER

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
        (rtol_y, atol_y), (rtol_dx, atol_dx) = OUTPUT_TOLERANCE, GRADIENT_TOLERANCE
        if y.shape != y_ref.shape or dx is None or dx.shape != dx_ref.shape:
            out["message"] = "not timed: at this shape the output or dx has the wrong shape"
        elif (not torch.allclose(y, y_ref, rtol=rtol_y, atol=atol_y)
              or not torch.allclose(dx, dx_ref, rtol=rtol_dx, atol=atol_dx)):
            out["message"] = "not timed: at this shape the output or dx differs from nn.BatchNorm1d's"
    except Exception as e:  # noqa: BLE001 - the student's code
        out["message"] = f"not timed: {type(e).__name__}: {str(e)[:200]}"
    if not out["message"]:
        statements = {"forward": "with torch.no_grad(): layer(x)",
                      "forward+backward": "layer.zero_grad(); x.grad = None; layer(x).backward(dy)"}
        timers, number, best = {}, {}, {}
        for mode, stmt in statements.items():
            for name, layer in layers.items():
                timers[mode, name] = timeit.Timer(stmt, globals={"layer": layer, "torch": torch, "dy": dy,
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
    print(MARKER + json.dumps(out))
