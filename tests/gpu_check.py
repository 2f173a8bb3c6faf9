"""The GPU check: everything the course says about CUDA, verified in one run of a few minutes.

Run ``make gpu-check`` (or ``.venv/bin/python tests/gpu_check.py``) on a machine with a CUDA
GPU. Four steps, each in its own process with its own time limit, the whole under
:data:`BUDGET_S` seconds:

1. ``cuda tests``: the test suite's ``cuda``-marked tests (``pytest -m cuda``): the
   conformance suite on the GPU, half precision, the Triton kernel at size, SyncBatchNorm;
2. ``triton``: :func:`bnlib.triton.compare_with_torch` at :data:`GOAL_SHAPES`, outputs,
   gradients and running statistics against ``nn.BatchNorm1d`` (cuDNN), float32 and float16;
3. ``student``: the ``bn-torch`` notebook's ``BatchNorm1d`` (the instructor's solution, a
   correct submission) loaded as ``python -m bnlib.bench --student`` loads one, checked on
   the CPU as the harness checks it, then one training step on the GPU against
   ``nn.BatchNorm1d`` at :data:`GOAL_SHAPES`;
4. ``bench``: ``python -m bnlib.bench --device cuda`` at :data:`GOAL_SHAPES`, the run's JSON
   (median over rounds, spread, noise warnings) kept whole.

It writes ``gpu-check.json`` into ``--out`` (default ``_build/gpu-check``): each step's
status (``passed``, ``failed``, ``skipped``), seconds, and what it measured; the bench
report, which the chapter "Benchmarks" can show beside the committed CPU run; and the GPU
goals, read from that report: the Triton kernel, forward and backward at 65,536 × 256, at
most :data:`GOAL_RATIO` times cuDNN's time and at least :data:`GOAL_ROOFLINE` of the copy
bandwidth measured in the same run. The goals are reported, never asserted: they are
machine-speed numbers. The exit status is 1 when a correctness step failed.

Without a GPU, ``--cpu`` runs the same steps on the CPU at small shapes, the Triton
kernels in Triton's interpreter (``TRITON_INTERPRET=1``, set in the step's own process before
Triton is imported): that is how the test suite checks this script
(``tests/test_gpu_check.py``). The ``cuda`` tests then skip, and the goals are "not measured".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: The whole check's time limit, in seconds.
BUDGET_S = 290.0
#: Each step's own limit, in seconds (the remaining budget, if less).
STEP_LIMIT_S = {"cuda tests": 150.0, "triton": 60.0, "student": 60.0, "bench": 150.0}
#: The shapes the GPU goals are stated at (bnlib.bench's GOAL_SHAPE and MID_SHAPE, written out: the
#: driver imports neither torch nor bnlib; a test checks they agree), and the small ones of ``--cpu``.
GOAL_SHAPES = ((65536, 256), (16384, 256))
CPU_SHAPES = ((96, 40), (8, 6, 5))
#: The goals for the Triton kernel at 65,536 × 256, forward and backward (issue 17).
GOAL_SHAPE, GOAL_RATIO, GOAL_ROOFLINE = (65536, 256), 1.0, 0.60
#: Largest relative difference from nn.BatchNorm1d that passes, per dtype.
TOLERANCE = {"float32": 1e-4, "float16": 5e-3}
#: Where the solution notebook is (a correct bn-torch submission).
NOTEBOOK = REPO / "solutions" / "bn-torch" / "bn-torch.ipynb"
#: The kernels timed on the GPU (nn.BatchNorm1d is always timed).
GPU_KERNELS = ("bnlib.torch", "fused_torch, compiled", "triton", "student")


def _python_step(step: str, device: str, shapes, out: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--step", step, "--device", device,
            "--out", str(out), *[f"--shape={','.join(map(str, s))}" for s in shapes]]


def _run(name: str, command: list[str], limit: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One step in its own process, bounded in time; its last line of output is its JSON result."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=limit,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"step": name, "status": "failed", "seconds": round(time.perf_counter() - started, 1),
                "detail": f"ran past its {limit:.0f} s limit"}
    entry: dict[str, Any] = {"step": name, "seconds": round(time.perf_counter() - started, 1)}
    lines = done.stdout.strip().splitlines()
    try:
        entry.update(json.loads(lines[-1]))
    except (IndexError, json.JSONDecodeError):
        entry.update(status="failed", detail=(done.stdout + done.stderr)[-2000:])
    if done.returncode != 0 and entry.get("status") != "failed":
        entry.update(status="failed", detail=(done.stdout + done.stderr)[-2000:])
    return entry


def _cuda_tests(limit: float, device: str) -> dict[str, Any]:
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "-rs", "tests"]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"step": "cuda tests", "status": "failed", "seconds": round(limit, 1),
                "detail": f"ran past its {limit:.0f} s limit"}
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    status = "passed" if done.returncode == 0 else "failed"
    if status == "passed" and device == "cpu":
        status = "skipped"  # without a GPU every cuda test skips; pytest exits 0 for that
    return {"step": "cuda tests", "status": status, "seconds": round(time.perf_counter() - started, 1),
            "summary": summary, "detail": "" if done.returncode == 0 else done.stdout[-3000:]}


# ---------------------------------------------------------------------------------------------
# The steps that run in their own process (``--step``): each prints one line of JSON last.
# ---------------------------------------------------------------------------------------------


def _relative_differences(got: dict, want: dict) -> dict[str, float]:
    return {key: float((got[key].double() - want[key].double()).abs().max()
                       / want[key].double().abs().max().clamp(min=1e-30)) for key in want}


def _training_step(layer, x, dy) -> dict:
    import torch  # noqa: PLC0415 - the steps' own processes import torch; the driver does not need it

    xi = x.clone().requires_grad_()
    y = layer(xi)
    dx, dgamma, dbeta = torch.autograd.grad(y, [xi, layer.weight, layer.bias], dy)
    return dict(y=y.detach(), dx=dx, dgamma=dgamma, dbeta=dbeta,
                running_mean=layer.running_mean, running_var=layer.running_var)


def step_triton(device: str, shapes) -> dict[str, Any]:
    """The Triton layer against nn.BatchNorm1d: one training step per shape and dtype."""
    import torch  # noqa: PLC0415 - see _training_step

    import bnlib.triton as bt  # noqa: PLC0415 - TRITON_INTERPRET must be set first, by the driver

    cases = []
    for shape in shapes:
        for dtype in (torch.float32, torch.float16):
            name = str(dtype).removeprefix("torch.")
            diffs = bt.compare_with_torch(tuple(shape), dtype=dtype, device=device)
            cases.append({"shape": list(shape), "dtype": name, "max_relative_difference": diffs,
                          "passed": max(diffs.values()) <= TOLERANCE[name]})
    return {"status": "passed" if all(c["passed"] for c in cases) else "failed",
            "interpreted": bt.INTERPRETED, "cases": cases}


def step_student(device: str, shapes) -> dict[str, Any]:
    """The solution notebook's BatchNorm1d: the harness's check, then a training step on ``device``."""
    import torch  # noqa: PLC0415 - see _training_step

    from bnlib.bench import student  # noqa: PLC0415 - see _training_step

    cls = student.load_module_class(NOTEBOOK)
    problems = student.check_against_torch(cls)
    cases = []
    generator = torch.Generator().manual_seed(0)
    for shape in shapes:
        c = shape[1]
        reference = torch.nn.BatchNorm1d(c, eps=1e-3)
        student._random_layer_state(reference, generator)
        mine = cls(c, eps=1e-3)
        mine.load_state_dict(reference.state_dict())
        x = (torch.randn(shape, generator=generator) * 0.5 + 3).to(device)
        dy = torch.randn(shape, generator=generator).to(device)
        want = _training_step(reference.to(device), x, dy)
        got = _training_step(mine.to(device), x, dy)
        diffs = _relative_differences(got, want)
        on_device = all(t.device.type == torch.device(device).type for t in got.values())
        cases.append({"shape": list(shape), "max_relative_difference": diffs, "on_device": on_device,
                      "passed": on_device and max(diffs.values()) <= TOLERANCE["float32"]})
    passed = not problems and all(c["passed"] for c in cases)
    return {"status": "passed" if passed else "failed", "notebook": str(NOTEBOOK.relative_to(REPO)),
            "problems": problems, "cases": cases}


def step_bench(device: str, shapes, out: Path, quick: bool) -> dict[str, Any]:
    """``python -m bnlib.bench`` at ``shapes``; the report is written to OUT/bench.json."""
    from bnlib.bench.__main__ import main  # noqa: PLC0415 - see _training_step

    kernels = list(GPU_KERNELS) if device == "cuda" else ["bnlib.torch", "triton", "student"]
    timing = ["--rounds", "2", "--min-run-time", "0.02"] if quick else ["--rounds", "3", "--min-run-time", "0.2"]
    argv = ["--device", device, "--kernels", *[k for k in kernels if k != "student"], "--student", str(NOTEBOOK),
            "--json", str(out / "bench.json"), "--no-plots", *timing]
    for shape in shapes:
        argv += ["--shape", ",".join(map(str, shape))]
    sys.stdout = sys.stderr  # the table goes to stderr: this step's stdout ends with its JSON line
    try:
        code = main(argv)
    finally:
        sys.stdout = sys.__stdout__
    if code != 0:
        return {"status": "failed", "detail": f"python -m bnlib.bench exited with {code}"}
    report = json.loads((out / "bench.json").read_text())
    return {"status": "passed", "warnings": report["noise"]["warnings"]}


# ---------------------------------------------------------------------------------------------
# The goals, from the bench report; the driver.
# ---------------------------------------------------------------------------------------------


def gpu_goals(report: dict[str, Any] | None) -> dict[str, Any]:
    """The Triton kernel at :data:`GOAL_SHAPE`, forward and backward: its ratio to cuDNN and its roofline."""
    if not report or report["machine"]["device"] != "cuda":
        return {"measured": False, "why": "no GPU: the goals are measured on a CUDA machine only"}
    row = next((r for r in report["results"] if r["kernel"] == "triton" and tuple(r["shape"]) == GOAL_SHAPE
                and r["mode"] == "forward+backward"), None)
    if row is None or row["seconds"] is None:
        return {"measured": False, "why": "the Triton kernel was not timed: " + str(row and row["error"])}
    return {"measured": True, "shape": list(GOAL_SHAPE), "ratio": row["ratio"], "spread": row["spread"],
            "roofline": row["roofline"], "peak_roofline": row["peak_roofline"],
            "ratio_goal": GOAL_RATIO, "roofline_goal": GOAL_ROOFLINE,
            "ratio_met": row["ratio"] <= GOAL_RATIO, "roofline_met": row["roofline"] >= GOAL_ROOFLINE,
            "noise_warnings": report["noise"]["warnings"]}


def check(device: str, out: Path, budget: float = BUDGET_S) -> dict[str, Any]:
    """All four steps on ``device`` (``"cuda"``, or ``"cpu"`` for the small check); the JSON-ready result."""
    out.mkdir(parents=True, exist_ok=True)
    shapes = GOAL_SHAPES if device == "cuda" else CPU_SHAPES
    deadline = time.perf_counter() + budget

    def limit(name: str) -> float:
        return max(1.0, min(STEP_LIMIT_S[name], deadline - time.perf_counter()))

    interpret = {"TRITON_INTERPRET": "1"} if device == "cpu" else {"TRITON_INTERPRET": "0"}
    steps = [_cuda_tests(limit("cuda tests"), device)]
    steps.append(_run("triton", _python_step("triton", device, shapes, out), limit("triton"), interpret))
    steps.append(_run("student", _python_step("student", device, shapes, out), limit("student")))
    bench_shapes = shapes if device == "cuda" else shapes[:1]
    steps.append(_run("bench", _python_step("bench", device, bench_shapes, out), limit("bench")))
    report_path = out / "bench.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() and steps[-1]["status"] == "passed" else None
    result = {"device": device, "shapes": [list(s) for s in shapes], "budget_s": budget, "steps": steps,
              "goals": gpu_goals(report), "bench": report}
    (out / "gpu-check.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="no GPU: the small check on the CPU (Triton interpreted)")
    parser.add_argument("--out", type=Path, default=REPO / "_build" / "gpu-check")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--step", choices=("triton", "student", "bench"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shape", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        shapes = [tuple(int(n) for n in s.split(",")) for s in args.shape]
        if args.step == "triton":
            result = step_triton(args.device, shapes)
        elif args.step == "student":
            result = step_student(args.device, shapes)
        else:
            result = step_bench(args.device, shapes, args.out, quick=args.device == "cpu")
        print(json.dumps(result))
        return 0 if result["status"] == "passed" else 1
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda":
        import torch  # noqa: PLC0415 - --help and --cpu need no torch in the driver

        if not torch.cuda.is_available():
            parser.error("no CUDA GPU here: run with --cpu for the small check on the CPU")
    result = check(device, args.out, args.budget)
    for step in result["steps"]:
        print(f"{step['step']:<11} {step['status']:<8} {step['seconds']:6.1f} s  {step.get('summary', '')}")
    goals = result["goals"]
    if goals["measured"]:
        print(f"triton at {GOAL_SHAPE}: {goals['ratio']:.2f}x cuDNN (goal <= {GOAL_RATIO}), "
              f"{100 * goals['roofline']:.0f}% of copy bandwidth (goal >= {100 * GOAL_ROOFLINE:.0f}%; "
              f"{100 * goals['peak_roofline']:.0f}% of the run's fastest copy)")
    else:
        print(f"goals not measured: {goals['why']}")
    print(f"wrote {args.out / 'gpu-check.json'}")
    return 1 if any(s["status"] == "failed" for s in result["steps"]) else 0


if __name__ == "__main__":
    sys.exit(main())
