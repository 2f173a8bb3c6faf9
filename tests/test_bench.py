"""bnlib.bench: the harness in quick mode, its table and JSON, and benchmarking a student's notebook."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch

from bnlib import bench

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "bn-torch" / "bn-torch.ipynb"

# ---------------------------------------------------------------------------------------------
# Students' notebooks, small and hand-made: a correct one, a wrong one, one that delegates.
# ---------------------------------------------------------------------------------------------

SETUP = "import torch\nfrom torch import nn\n%matplotlib inline"

CORRECT = '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        dims = [0] if x.dim() == 2 else [0, 2]
        shape = [1, -1] + [1] * (x.dim() - 2)
        mu = x.mean(dims, keepdim=True)
        var = ((x - mu) ** 2).mean(dims, keepdim=True)
        x_hat = (x - mu) / torch.sqrt(var + eps)
        ctx.save_for_backward(x_hat, gamma, var)
        ctx.eps, ctx.dims = eps, dims
        return gamma.view(shape) * x_hat + beta.view(shape)

    @staticmethod
    def backward(ctx, dy):
        x_hat, gamma, var = ctx.saved_tensors
        dims = ctx.dims
        shape = [1, -1] + [1] * (x_hat.dim() - 2)
        m = x_hat.numel() // x_hat.shape[1]
        dbeta, dgamma = dy.sum(dims), (dy * x_hat).sum(dims)
        k = gamma.view(shape) / torch.sqrt(var + ctx.eps)
        dx = k / m * (m * dy - dbeta.view(shape) - x_hat * dgamma.view(shape))
        return dx, dgamma, dbeta, None


class BatchNorm1d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):
        if not self.training:
            shape = [1, -1] + [1] * (x.dim() - 2)
            x_hat = (x - self.running_mean.view(shape)) / torch.sqrt(self.running_var.view(shape) + self.eps)
            return self.weight.view(shape) * x_hat + self.bias.view(shape)
        dims = [0] if x.dim() == 2 else [0, 2]
        m = x.numel() // x.shape[1]
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(x.mean(dims), self.momentum)
            self.running_var.lerp_(x.var(dims, correction=RUNNING_VAR_CORRECTION), self.momentum)
        return BatchNormFunction.apply(x, self.weight, self.bias, self.eps)
'''

DELEGATING = '''
class BatchNorm1d(nn.BatchNorm1d):
    def forward(self, x):
        return torch.nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )
'''


def _cell(source: str, **nbgrader) -> dict:
    metadata = {"nbgrader": {"schema_version": 3, **nbgrader}} if nbgrader else {}
    return {"cell_type": "code", "metadata": metadata, "source": source, "outputs": [], "execution_count": None}


def write_notebook(path: Path, solution: str, constant: str = "RUNNING_VAR_CORRECTION = 1") -> Path:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "# Batch norm in PyTorch"},
        _cell(SETUP, grade=False, solution=False, locked=True, grade_id="setup"),
        _cell(constant + "\n" + solution, grade=False, solution=True, locked=False, grade_id="solution"),
        _cell("layer = BatchNorm1d(3)\nprint(layer(torch.randn(4, 3)))", grade=False, solution=False, grade_id="demo"),
        _cell("from autograder.probe import check; check('forward', globals())",
              grade=True, solution=False, locked=True, points=1, grade_id="forward"),
    ]
    notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(notebook))
    return path


@pytest.fixture
def correct_notebook(tmp_path):
    return write_notebook(tmp_path / "correct.ipynb", CORRECT)


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
        assert 0 < r["roofline"] < 1.5  # nothing moves memory much faster than a copy


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
    def broken(x, dy):
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


# ---------------------------------------------------------------------------------------------
# Students' kernels.
# ---------------------------------------------------------------------------------------------


def test_notebook_source_keeps_definitions_and_drops_demos_tests_and_magics(correct_notebook):
    source = bench.notebook_source(correct_notebook)
    assert "class BatchNorm1d(nn.Module)" in source and "RUNNING_VAR_CORRECTION = 1" in source
    assert "import torch" in source
    assert "%matplotlib" not in source and "print(layer" not in source and "autograder" not in source


def test_a_correct_student_kernel_is_checked_then_timed(correct_notebook):
    speed = bench.student_speed(correct_notebook, shape=(512, 16), min_run_time=0.01, rounds=1)
    assert speed.correct and not speed.delegates, speed.message
    assert speed.ratio > 0 and speed.seconds > 0 and speed.reference_seconds > 0
    assert speed.cell() == f"{speed.ratio:.2f}×"


def test_a_wrong_running_variance_is_named_and_not_timed(tmp_path):
    notebook = write_notebook(tmp_path / "biased.ipynb", CORRECT, constant="RUNNING_VAR_CORRECTION = 0")
    speed = bench.student_speed(notebook, shape=(512, 16))
    assert not speed.correct and speed.ratio is None and speed.cell() == "—"
    assert "running_var differs from nn.BatchNorm1d's" in speed.message


def test_a_kernel_that_calls_pytorchs_batch_norm_is_flagged(tmp_path):
    notebook = write_notebook(tmp_path / "delegates.ipynb", DELEGATING)
    speed = bench.student_speed(notebook, shape=(512, 16), min_run_time=0.01, rounds=1)
    assert speed.correct and speed.delegates and speed.cell().endswith("(delegates)")


def test_a_syntax_error_names_the_cell(tmp_path):
    notebook = write_notebook(tmp_path / "broken.ipynb", "def forward(:\n    pass")
    speed = bench.student_speed(notebook)
    assert not speed.correct and "broken.ipynb, cell 3 has a syntax error" in speed.message


def test_a_missing_class_is_reported(tmp_path):
    module = tmp_path / "empty.py"
    module.write_text("x = 1\n")
    with pytest.raises(bench.StudentKernelError, match="defines no class BatchNorm1d"):
        bench.load_module_class(module)


def test_the_command_line_times_a_student_notebook(correct_notebook, tmp_path, capsys):
    code = bench.main([
        "--student", str(correct_notebook), "--shape", "256,8", "--kernels", "bnlib.torch",
        "--rounds", "1", "--min-run-time", "0.01", "--out", str(tmp_path), "--no-plots",
    ])
    assert code == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [k["name"] for k in report["kernels"]] == ["nn.BatchNorm1d", "bnlib.torch", "student"]
    assert "student" in capsys.readouterr().out


def test_the_command_line_refuses_a_wrong_student_kernel(tmp_path, capsys):
    notebook = write_notebook(tmp_path / "biased.ipynb", CORRECT, constant="RUNNING_VAR_CORRECTION = 0")
    assert bench.main(["--student", str(notebook), "--shape", "64,4", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not match nn.BatchNorm1d, so it is not timed" in err and "running_var" in err
