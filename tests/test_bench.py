"""bnlib.bench: the harness in quick mode, its table, JSON and plots."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from bnlib import bench

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

# ---------------------------------------------------------------------------------------------
# The harness in quick mode: one run shared by the tests below.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory, inductor_cache):
    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        code = bench.main(["--quick", "--min-run-time", "0.02", "--out", str(out)])
    assert code == 0
    return {"out": out, "printed": printed.getvalue(), "report": json.loads((out / "bench.json").read_text())}


def test_quick_mode_times_every_kernel_at_every_shape_and_mode(quick):
    report = quick["report"]
    kernels = [k["name"] for k in report["kernels"]]
    assert kernels[0] == "nn.BatchNorm1d"
    assert {"bnlib.torch", "fused_torch, compiled", "bnlib.numpy", "fused_numpy", "triton"} <= set(kernels)
    seen = {(r["kernel"], tuple(r["shape"]), r["mode"]) for r in report["results"]}
    assert seen == {(k, s, m) for k in kernels for s in bench.QUICK_SHAPES for m in bench.MODES}


def test_ratios_are_to_nn_batchnorm_in_the_same_run(quick):
    for r in quick["report"]["results"]:
        if r["kernel"] == "nn.BatchNorm1d":
            assert r["ratio"] == 1.0
        elif r["seconds"] is not None:
            ref = next(
                q for q in quick["report"]["results"]
                if q["kernel"] == "nn.BatchNorm1d" and q["shape"] == r["shape"] and q["mode"] == r["mode"]
            )
            assert r["ratio"] == pytest.approx(r["seconds"] / ref["seconds"])


def test_bandwidth_is_bytes_that_must_move_over_time(quick):
    report = quick["report"]
    measured = [r for r in report["results"] if r["seconds"] is not None]
    assert len(measured) >= 6 * len(bench.QUICK_SHAPES) * 2
    for r in measured:
        assert r["seconds"] > 0 and r["runs"] >= 1
        assert r["bandwidth"] == pytest.approx(bench.bytes_moved(r["shape"], r["mode"]) / r["seconds"])
        assert r["roofline"] == pytest.approx(r["bandwidth"] / report["copy_bandwidth"])
        assert r["roofline"] > 0


def test_triton_is_listed_but_not_timed_without_a_gpu(quick):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the Triton kernel is timed")
    rows = [r for r in quick["report"]["results"] if r["kernel"] == "triton"]
    assert rows and all(r["seconds"] is None and r["error"] == "needs a CUDA GPU" for r in rows)


def test_report_records_the_machine_threads_and_load(quick):
    machine = quick["report"]["machine"]
    assert machine["threads"] == torch.get_num_threads() and machine["cores"] >= 1
    assert machine["torch"] == torch.__version__
    assert len(machine["load_average_before"]) == 3 and len(machine["load_average_after"]) == 3
    assert machine["date"].endswith("+00:00")
    assert quick["report"]["copy_bandwidth"] > 1e8


def test_printed_table_lists_every_kernel_and_the_machine(quick):
    printed = quick["printed"]
    assert "forward+backward" in printed and "×nn" in printed and "% copy" in printed
    for k in quick["report"]["kernels"]:
        assert k["name"] in printed
    assert "load average" in printed and "copy bandwidth" in printed


def test_table_is_rendered_again_from_the_json(quick):
    table = bench.format_table(quick["report"])
    assert table in quick["printed"]


def test_plots_are_written_as_png(quick):
    for name in ("ratio.png", "roofline.png"):
        assert (quick["out"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fused_numpy_beats_the_staged_layer_at_the_goal_shape(quick):
    # Eight array transfers against about twenty, and no float64 copies: a wide margin.
    by = {(r["kernel"], tuple(r["shape"]), r["mode"]): r for r in quick["report"]["results"]}
    fused = by[("fused_numpy", bench.GOAL_SHAPE, "forward+backward")]["seconds"]
    staged = by[("bnlib.numpy", bench.GOAL_SHAPE, "forward+backward")]["seconds"]
    assert fused < staged / 2


def test_bytes_moved_counts_tensors_the_size_of_x():
    assert bench.bytes_moved((10, 3), "forward") == 2 * 30 * 4
    assert bench.bytes_moved((10, 3, 2), "forward+backward", itemsize=8) == 5 * 60 * 8


def test_full_sweep_spans_the_sizes_of_the_course():
    shapes = bench.FULL_SHAPES
    two_d = [s for s in shapes if len(s) == 2]
    assert min(s[0] for s in two_d) == 64 and max(s[0] for s in two_d) == 65536
    assert min(s[1] for s in two_d) == 16 and max(s[1] for s in two_d) == 4096
    assert any(len(s) == 3 for s in shapes) and bench.GOAL_SHAPE in shapes
    assert all(math.prod(s) <= 2**24 for s in shapes)


def test_a_kernel_that_raises_is_reported_and_the_others_go_on():
    def broken(x, dy, threads):
        raise RuntimeError("out of ideas")

    kernels = [bench.module_kernel("nn.BatchNorm1d", "", torch.nn.BatchNorm1d), bench.Kernel("broken", "", broken)]
    results = bench.run(kernels, [(64, 4)], ["forward"], min_run_time=0.01, rounds=1)
    by = {r.kernel: r for r in results}
    assert by["broken"].seconds is None and "out of ideas" in by["broken"].error
    assert by["nn.BatchNorm1d"].seconds > 0


def test_bad_shapes_are_refused_with_a_message(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--shape", "0,3"])
    assert e.value.code == 2
    assert "a shape is N,C or N,C,L with positive sizes" in capsys.readouterr().err
