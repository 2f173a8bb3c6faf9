"""tests/gpu_check.py, the GPU check: its CPU part (``--cpu``), with the Triton kernels interpreted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402 - a script beside the tests, not a package

from bnlib import bench  # noqa: E402 - after the path to gpu_check, with the other imports


def test_the_gpu_goal_shapes_are_the_harness_s():
    assert gpu_check.GOAL_SHAPES == (bench.GOAL_SHAPE, bench.MID_SHAPE)
    assert gpu_check.GOAL_SHAPE == bench.GOAL_SHAPE


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory, inductor_cache):
    out = tmp_path_factory.mktemp("gpu-check")
    code = gpu_check.main(["--cpu", "--out", str(out)])
    return code, json.loads((out / "gpu-check.json").read_text())


def test_the_cpu_check_runs_every_step_and_passes(cpu_check):
    code, result = cpu_check
    steps = {s["step"]: s for s in result["steps"]}
    assert list(steps) == ["cuda tests", "triton", "student", "bench"]
    assert code == 0, result["steps"]
    # Without a GPU every cuda test is collected, and skips.
    assert steps["cuda tests"]["status"] == "skipped" and "skipped" in steps["cuda tests"]["summary"]
    assert all(steps[s]["status"] == "passed" for s in ("triton", "student", "bench"))


def test_the_triton_kernels_ran_in_the_interpreter_against_nn_batchnorm1d(cpu_check):
    triton = next(s for s in cpu_check[1]["steps"] if s["step"] == "triton")
    assert triton["interpreted"] is True
    cases = {(tuple(c["shape"]), c["dtype"]) for c in triton["cases"]}
    assert cases == {(s, d) for s in gpu_check.CPU_SHAPES for d in ("float32", "float16")}
    for case in triton["cases"]:
        assert set(case["max_relative_difference"]) == {"y", "dx", "dgamma", "dbeta", "running_mean", "running_var"}
        assert max(case["max_relative_difference"].values()) <= gpu_check.TOLERANCE[case["dtype"]]


def test_the_student_layer_is_checked_on_the_device(cpu_check):
    student = next(s for s in cpu_check[1]["steps"] if s["step"] == "student")
    assert student["problems"] == [] and len(student["cases"]) == len(gpu_check.CPU_SHAPES)
    assert all(c["on_device"] and c["passed"] for c in student["cases"])


def test_the_bench_report_is_kept_whole_and_the_goals_wait_for_a_gpu(cpu_check):
    result = cpu_check[1]
    report = result["bench"]
    kernels = {k["name"] for k in report["kernels"]}
    assert {"nn.BatchNorm1d", "bnlib.torch", "student", "triton"} <= kernels
    assert "warnings" in report["noise"] and report["machine"]["device"] == "cpu"
    assert result["goals"] == {"measured": False, "why": "no GPU: the goals are measured on a CUDA machine only"}


def test_the_goals_are_read_from_a_cuda_report():
    row = {"kernel": "triton", "shape": [65536, 256], "mode": "forward+backward", "seconds": 0.001,
           "ratio": 0.9, "spread": 0.02, "roofline": 0.55, "peak_roofline": 0.5, "error": None}
    report = {"machine": {"device": "cuda"}, "results": [row], "noise": {"warnings": []}}
    goals = gpu_check.gpu_goals(report)
    assert goals["measured"] and goals["ratio_met"] and not goals["roofline_met"]
    assert goals["roofline"] == 0.55 and goals["peak_roofline"] == 0.5  # the goal is read from the paired roofline


def test_a_step_past_its_limit_fails_and_says_so():
    entry = gpu_check._run("slow", [sys.executable, "-c", "import time; time.sleep(10)"], limit=0.5)
    assert entry["status"] == "failed" and "limit" in entry["detail"]
