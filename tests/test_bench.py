"""bnlib.bench: the harness in quick mode, its table, JSON and plots."""

from __future__ import annotations

import contextlib
import io
import json
import math
import mmap
import os
import statistics
import subprocess
import sys
import time

import pytest
import torch

from bnlib import bench
from bnlib.bench import core as bench_core
from bnlib.bench import memory as bench_memory
from bnlib.bench import report as bench_report

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


def test_the_table_and_the_json_name_the_memory_mode_of_the_run(quick):
    this = bench_memory.mode()  # "default" unless the tests run with one of its variables set
    assert quick["report"]["machine"]["memory"] == this
    assert f"fresh memory: {this}" in quick["printed"]


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


def test_each_round_s_ratio_pairs_a_time_with_the_reference_s_in_that_round(quick):
    results = quick["report"]["results"]
    ref = {(tuple(q["shape"]), q["mode"]): q for q in results if q["kernel"] == "nn.BatchNorm1d"}
    for r in results:
        if r["seconds"] is None:
            assert r["round_ratios"] is None
            continue
        rounds = ref[(tuple(r["shape"]), r["mode"])]["round_seconds"]
        paired = [t / t_ref for t, t_ref in zip(r["round_seconds"], rounds, strict=True)]
        assert r["round_ratios"] == pytest.approx(paired)
        assert len(r["round_ratios"]) == quick["report"]["config"]["rounds"]
        if r["kernel"] == "nn.BatchNorm1d":
            assert r["round_ratios"] == [1.0] * len(rounds)


def test_each_round_s_roofline_pairs_a_bandwidth_with_the_copy_timed_in_that_round(quick):
    report = quick["report"]
    rounds = report["config"]["rounds"]
    for r in report["results"]:
        if r["seconds"] is None:
            assert r["round_rooflines"] is None
            continue
        copies = r["round_copy_bandwidth"]
        assert len(copies) == rounds and all(bw > 1e8 for bw in copies)
        moved = bench.bytes_moved(r["shape"], r["mode"])
        assert r["round_rooflines"] == pytest.approx([moved / t / bw for t, bw in zip(r["round_seconds"], copies,
                                                                                   strict=True)])
        assert report["copy_bandwidth"] >= max(copies)  # the machine's best copy includes those of the rounds
    by_shape = {}
    for r in report["results"]:  # one copy per round and shape, shared by every kernel there
        if r["round_copy_bandwidth"]:
            assert by_shape.setdefault(tuple(r["shape"]), r["round_copy_bandwidth"]) == r["round_copy_bandwidth"]


def test_bandwidth_is_bytes_that_must_move_over_time(quick):
    report = quick["report"]
    measured = [r for r in report["results"] if r["seconds"] is not None]
    assert len(measured) >= 6 * len(bench.QUICK_SHAPES) * 2
    for r in measured:
        assert r["seconds"] > 0 and r["runs"] >= 1
        assert r["bandwidth"] == pytest.approx(bench.bytes_moved(r["shape"], r["mode"]) / r["seconds"])
        assert r["roofline"] == pytest.approx(r["bandwidth"] / statistics.median(r["round_copy_bandwidth"]))
        assert r["peak_roofline"] == pytest.approx(r["bandwidth"] / report["copy_bandwidth"])
        assert 0 < r["peak_roofline"] <= r["roofline"]


def test_each_time_is_the_median_over_rounds_with_their_spread(quick):
    measured = [r for r in quick["report"]["results"] if r["seconds"] is not None]
    for r in measured:
        assert len(r["round_seconds"]) == quick["report"]["config"]["rounds"]
        assert r["seconds"] == pytest.approx(statistics.median(r["round_seconds"]))
        assert r["spread"] == pytest.approx(bench.spread(r["round_seconds"]))


def test_each_measurement_counts_its_page_faults_per_call_round_by_round(quick):
    measured = [r for r in quick["report"]["results"] if r["seconds"] is not None]
    for r in measured:
        assert len(r["round_page_faults"]) == quick["report"]["config"]["rounds"]
        assert min(r["round_page_faults"]) >= 0
        assert r["page_faults"] == pytest.approx(statistics.median(r["round_page_faults"]))
    assert "faults" in quick["printed"].splitlines()[next(i for i, line in enumerate(quick["printed"].splitlines())
                                                          if line.startswith("shape"))]


def test_report_records_the_run_s_noise_and_the_table_shows_the_spread(quick):
    noise = quick["report"]["noise"]
    assert noise["spread_limit"] == bench.SPREAD_LIMIT and isinstance(noise["warnings"], list)
    assert noise["max_spread"] == max(r["spread"] for r in quick["report"]["results"] if r["spread"] is not None)
    assert len(noise["load_average_before"]) == 3 and noise["other_cores"] >= 0
    assert "±" in quick["printed"] and "the median over rounds" in quick["printed"]
    for warning in noise["warnings"]:  # a busy machine while the suite ran: said in the table too
        assert f"WARNING: {warning}" in quick["printed"]


def test_spread_is_the_range_of_the_rounds_over_their_median():
    assert bench.spread([1.0, 1.0, 1.0]) == 0
    assert bench.spread([1.0, 2.0, 1.5]) == pytest.approx(1 / 1.5)


def test_a_quiet_run_gets_no_warning():
    assert bench.noise_warnings(cores=2, threads=2, load_before=0.2, other_cores=0.1,
                                spreads=[("a", 0.02), ("b", bench.SPREAD_LIMIT)]) == []


def test_a_loaded_machine_is_named_and_one_thread_is_suggested():
    (before, during) = bench.noise_warnings(cores=2, threads=2, load_before=4.0, other_cores=1.9)
    assert "load average was 4.00" in before and "--threads 1" in before
    assert "1.90 cores busy" in during
    # With one thread of two cores, another process may have the other core.
    assert bench.noise_warnings(cores=2, threads=1, load_before=1.0, other_cores=1.2) == []
    (alone,) = bench.noise_warnings(cores=2, threads=1, other_cores=1.8)
    assert "--threads" not in alone


def test_a_copy_that_changes_between_rounds_is_named_as_the_memory_not_the_load():
    copies = [("1024×64", 0.05), ("65536×256", 0.4), ("16384×256", 0.2)]
    (warning,) = bench.noise_warnings(cores=2, threads=2, load_before=0.1, other_cores=0.02, copy_spreads=copies)
    assert "2 of 3 shapes" in warning and "40%, at 65536×256" in warning
    assert "memory bandwidth itself changed" in warning and "round by round" in warning
    steady = [("1024×64", 0.05), ("65536×256", bench.SPREAD_LIMIT)]
    assert bench.noise_warnings(cores=2, threads=2, copy_spreads=steady) == []


def test_the_report_takes_the_copy_spread_from_each_shapes_rounds(monkeypatch):
    # Each round's copy runs at two thirds of the rate of the round before (3, 2, 4/3 bytes a second), at both shapes.
    rates = iter([3.0, 2.0, 4 / 3] * 2)
    monkeypatch.setattr(bench_core, "_copy_timer", lambda *a, **k: lambda min_run_time: next(rates))
    monkeypatch.setattr(bench_report, "copy_bandwidth", lambda **k: 3.0)
    report = bench.benchmark_report([bench.Kernel("noop", "", lambda x, dy, t: (lambda: None, lambda: None))],
                                    [(8, 2), (4, 2)], modes=["forward"], min_run_time=0.001, rounds=3)
    expected = bench.spread([3.0, 2.0, 4 / 3])
    assert report["noise"]["max_copy_spread"] == pytest.approx(expected)
    (warning,) = [w for w in report["noise"]["warnings"] if "memory bandwidth itself" in w]
    assert "2 of 2 shapes" in warning
    assert f"WARNING: {warning}" in bench.format_table(report)


def test_a_roofline_is_to_the_copies_of_its_own_rounds_and_not_to_the_fastest_copy_of_the_run(monkeypatch):
    # The first shape's copies run at 3, 2 and 4/3 bytes a second (median 2); the second shape's at 9:
    # the fastest copy of the run, which lowers every peak_roofline and leaves the rooflines as they were.
    rates = iter([3.0, 2.0, 4 / 3, 9.0, 9.0, 9.0])
    monkeypatch.setattr(bench_core, "_copy_timer", lambda *a, **k: lambda min_run_time: next(rates))
    monkeypatch.setattr(bench_report, "copy_bandwidth", lambda **k: 1.0)
    report = bench.benchmark_report([bench.Kernel("noop", "", lambda x, dy, t: (lambda: None, lambda: None))],
                                    [(8, 2), (4, 2)], modes=["forward"], min_run_time=0.001, rounds=3)
    first, second = report["results"]
    assert report["copy_bandwidth"] == 9.0 and report["copy_bandwidth_before"] == 1.0
    assert first["roofline"] == pytest.approx(first["bandwidth"] / 2.0)
    assert second["roofline"] == pytest.approx(second["bandwidth"] / 9.0)
    for r in (first, second):
        assert r["peak_roofline"] == pytest.approx(r["bandwidth"] / 9.0)
    assert "the median copy timed in the same rounds" in bench.format_table(report)


def _report_of_a_kernel_that_changes_after_its_first_round(name, first, later):
    """The report of one synthetic kernel at 8×2, forward, 3 rounds: ``first()`` in round one, ``later()`` after.

    The harness reports progress once at the end of each round: that is when the kernel changes.
    """
    state = {"round": 0}

    def prepare(x, dy, threads):
        def call():
            (first if state["round"] == 0 else later)()

        return call, call

    def next_round(line):
        state["round"] += 1

    return bench.benchmark_report([bench.Kernel(name, "", prepare)], [(8, 2)], modes=["forward"],
                                  min_run_time=0.02, rounds=3, progress=next_round)


def test_rounds_that_disagree_are_flagged_in_the_json_and_the_table():
    # A synthetic kernel that is three times slower from the second round on.
    report = _report_of_a_kernel_that_changes_after_its_first_round(
        "sleepy", lambda: time.sleep(0.001), lambda: time.sleep(0.003))
    (r,) = report["results"]
    # the median of the rounds (one fast, two slow: a slow one), not the fastest round
    assert r["spread"] > 0.4 and r["seconds"] == pytest.approx(statistics.median(r["round_seconds"]))
    assert r["seconds"] > 2 * min(r["round_seconds"])
    (warning,) = [w for w in report["noise"]["warnings"] if "measurements differ" in w]
    assert "1 of 1 measurements" in warning and "sleepy at 8×2, forward" in warning
    assert "the machine was disturbed, and" in warning  # sleeping faults no page: the memory is not blamed
    table = bench.format_table(report)
    assert f"WARNING: {warning}" in table and "!" in table


PAGE = mmap.PAGESIZE
FRESH_PAGES = 256  # 1 MiB in 4 KiB pages, below the 2 MiB of a huge page: one fault per page


def _write_fresh_pages():
    """Write one byte to each page of a new anonymous mapping: one page fault per page."""
    with mmap.mmap(-1, FRESH_PAGES * PAGE) as fresh:
        fresh[::PAGE] = b"\1" * FRESH_PAGES


def test_page_faults_per_call_count_the_pages_of_fresh_memory_a_call_writes():
    with mmap.mmap(-1, FRESH_PAGES * PAGE) as kept:
        kept[::PAGE] = b"\1" * FRESH_PAGES  # mapped once, before the timing

        def rewrite():
            kept[::PAGE] = b"\2" * FRESH_PAGES

        kernels = [bench.Kernel("fresh", "", lambda x, dy, t: (_write_fresh_pages, _write_fresh_pages)),
                   bench.Kernel("kept", "", lambda x, dy, t: (rewrite, rewrite))]
        fresh, reused = bench.run(kernels, [(8, 2)], ["forward"], min_run_time=0.02, rounds=2)
    assert all(FRESH_PAGES <= f < FRESH_PAGES + 8 for f in fresh.round_page_faults)
    assert max(reused.round_page_faults) < 1
    assert fresh.page_faults == pytest.approx(statistics.median(fresh.round_page_faults))


def test_without_getrusage_no_page_fault_is_counted_and_none_is_warned_about(monkeypatch):
    monkeypatch.setattr(bench_core, "resource", None)  # as on Windows
    kernels = [bench.Kernel("fresh", "", lambda x, dy, t: (_write_fresh_pages, _write_fresh_pages))]
    report = bench.benchmark_report(kernels, [(8, 2)], modes=["forward"], min_run_time=0.01, rounds=2)
    (r,) = report["results"]
    assert r["page_faults"] is None and r["round_page_faults"] is None
    assert report["noise"]["fault_changes"] == []
    assert "faults" in bench.format_table(report)  # the column is there, empty


def test_a_report_from_before_page_faults_were_counted_still_prints():
    noop = bench.Kernel("noop", "", lambda x, dy, t: (lambda: None, lambda: None))
    old = bench.benchmark_report([noop], [(8, 2)], modes=["forward"], min_run_time=0.001, rounds=2)
    for r in old["results"]:
        del r["page_faults"], r["round_page_faults"]
    assert "noop" in bench.format_table(json.loads(json.dumps(old)))


def test_rounds_whose_page_faults_differ_are_flagged_as_the_memory_s_state():
    # A synthetic kernel that writes fresh memory in the first round only, as glibc's moving
    # threshold makes nn.BatchNorm1d do at some sizes.
    report = _report_of_a_kernel_that_changes_after_its_first_round("moody", _write_fresh_pages, lambda: None)
    (r,) = report["results"]
    assert r["round_page_faults"][0] >= FRESH_PAGES and max(r["round_page_faults"][1:]) < 1
    assert report["noise"]["fault_changes"] == ["moody at 8×2, forward"]
    assert report["noise"]["fault_floor"] == bench.FAULT_FLOOR
    (warning,) = [w for w in report["noise"]["warnings"] if "page faults per call" in w]
    most = max(r["round_page_faults"])
    assert "1 of 1 measurements" in warning and f"moody at 8×2, forward, 0 to {most:.0f}" in warning
    assert "--reuse-memory" in warning
    # its rounds' times differ too, and that warning points to the memory as a cause
    (spread,) = [w for w in report["noise"]["warnings"] if "measurements differ" in w]
    assert "for 1 of them, the memory they were given changed" in spread
    table = bench.format_table(report)
    assert f"WARNING: {warning}" in table and f"0-{round(most)}" in table


def test_page_faults_that_differ_by_a_few_or_by_a_small_fraction_are_not_flagged():
    def flagged(*rounds):
        warnings = bench.noise_warnings(cores=2, threads=2, faults=[("k", rounds)])
        return any("page faults per call" in w for w in warnings)

    assert not flagged(0, bench.FAULT_FLOOR)  # a few faults a call: the harness's own
    assert not flagged(8192, 8192 * (1 - bench.SPREAD_LIMIT) + 1)  # every round fresh, within the spread limit
    assert flagged(0, bench.FAULT_FLOOR + 1)
    assert flagged(2109, 4293)  # nn.BatchNorm1d at 16384×256, forward+backward, in a sweep here


def test_a_run_that_already_reuses_memory_is_not_told_to():
    faults = [("k", (0, 4096))]
    (told,) = bench.noise_warnings(cores=2, threads=2, faults=faults)
    (not_told,) = bench.noise_warnings(cores=2, threads=2, faults=faults, reuse_memory=True)
    assert "--reuse-memory" in told and "--reuse-memory" not in not_told
    assert bench.fault_changes(faults) == ["k"]


BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"


def test_a_busy_process_during_the_run_is_reported():
    # A synthetic load, bounded in time: one process spinning on a core while the run times.
    cores = os.cpu_count() or 1
    busy = [subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=30)]) for _ in range(cores)]
    try:
        time.sleep(0.3)
        kernels = [bench.module_kernel("nn.BatchNorm1d", "", torch.nn.BatchNorm1d)]
        report = bench.benchmark_report(kernels, [(256, 16)], modes=["forward"], min_run_time=0.05, rounds=2,
                                        threads=cores)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    noise = report["noise"]
    # The spinning processes share the cores with the run's `cores` threads: at a fair share they
    # keep cores * cores / (cores + threads) = cores / 2 busy. A quarter less leaves the scheduler room
    # (at exactly cores / 2 the check failed now and then).
    assert noise["other_cores"] > 0.75 * cores / 2
    assert any("cores busy during the run" in w for w in noise["warnings"])
    assert "WARNING:" in bench.format_table(report)


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
    assert any(len(s) == 3 for s in shapes) and bench.GOAL_SHAPE in shapes and bench.SMALL_GOAL_SHAPE in shapes
    assert all(math.prod(s) <= 2**24 for s in shapes)


def _report_of(shapes):
    return {"results": [{"shape": list(s)} for s in shapes]}


def test_plot_panels_leave_out_a_channel_count_measured_at_one_batch_size():
    assert bench.panel_channels(_report_of(bench.FULL_SHAPES)) == [16, 256, 4096]


def test_plot_panels_of_a_sweep_with_one_batch_size_per_channel_count_show_them_all():
    assert bench.panel_channels(_report_of(bench.QUICK_SHAPES)) == [64, 256]


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
