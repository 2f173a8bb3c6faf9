"""bnlib.bench.student: a student's BatchNorm1d from a notebook or a module, checked, then timed by the harness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from bnlib import bench
from bnlib.bench import student

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
        _cell("from autograder.inside.probe import check; check('forward', globals())",
              grade=True, solution=False, locked=True, points=1, grade_id="forward"),
    ]
    notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(notebook))
    return path


@pytest.fixture
def correct_notebook(tmp_path):
    return write_notebook(tmp_path / "correct.ipynb", CORRECT)


# ---------------------------------------------------------------------------------------------
# Students' kernels.
# ---------------------------------------------------------------------------------------------


def test_notebook_source_keeps_definitions_and_drops_demos_tests_and_magics(correct_notebook):
    source = student.notebook_source(correct_notebook)
    assert "class BatchNorm1d(nn.Module)" in source and "RUNNING_VAR_CORRECTION = 1" in source
    assert "import torch" in source
    assert "%matplotlib" not in source and "print(layer" not in source and "autograder" not in source


def test_a_correct_student_kernel_is_checked_then_becomes_a_kernel(correct_notebook):
    kernel = student.student_kernel(correct_notebook)
    assert isinstance(kernel, bench.Kernel) and kernel.name == "student" and kernel.unavailable is None
    assert kernel.description == "BatchNorm1d from correct.ipynb"
    results = bench.run([bench.module_kernel(bench.REFERENCE, "", nn.BatchNorm1d), kernel], [(512, 16)],
                        min_run_time=0.01, rounds=1)
    assert all(r.seconds > 0 and r.ratio > 0 for r in results if r.kernel == "student")


def test_a_wrong_running_variance_is_named_and_not_timed(tmp_path):
    notebook = write_notebook(tmp_path / "biased.ipynb", CORRECT, constant="RUNNING_VAR_CORRECTION = 0")
    with pytest.raises(student.StudentKernelError, match="does not match nn.BatchNorm1d") as e:
        student.student_kernel(notebook)
    assert "running_var differs from nn.BatchNorm1d's" in str(e.value)
    assert "(16, 5), training: running_var" in str(e.value)  # named at the first step it goes wrong


def test_a_kernel_that_calls_pytorchs_batch_norm_is_flagged(tmp_path):
    notebook = write_notebook(tmp_path / "delegates.ipynb", DELEGATING)
    assert student.student_kernel(notebook).description.endswith("(calls PyTorch's own batch norm)")
    assert not student.uses_torch_batch_norm(student.load_module_class(write_notebook(tmp_path / "ok.ipynb", CORRECT)))


def test_a_syntax_error_names_the_cell(tmp_path):
    notebook = write_notebook(tmp_path / "broken.ipynb", "def forward(:\n    pass")
    with pytest.raises(student.StudentKernelError, match=r"broken.ipynb, cell 3 has a syntax error \(line 2\)"):
        student.notebook_source(notebook)


def test_a_missing_class_is_reported(tmp_path):
    module = tmp_path / "empty.py"
    module.write_text("x = 1\n")
    with pytest.raises(student.StudentKernelError, match="defines no class BatchNorm1d"):
        student.load_module_class(module)


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


def test_the_solution_notebook_is_benchmarked_end_to_end(tmp_path, capsys):
    assert SOLUTION.is_file(), "the bn-torch solution notebook is missing"
    code = bench.main([
        "--student", str(SOLUTION), "--shape", "2048,32", "--shape", "16,8,32", "--kernels", "bnlib.torch",
        "--rounds", "1", "--min-run-time", "0.01", "--json", str(tmp_path / "solution.json"), "--no-plots",
    ])
    assert code == 0
    report = json.loads((tmp_path / "solution.json").read_text())
    rows = [r for r in report["results"] if r["kernel"] == "student"]
    assert len(rows) == 4 and all(r["seconds"] > 0 and r["ratio"] > 0 for r in rows)
    assert "BatchNorm1d from bn-torch.ipynb" in json.dumps(report["kernels"])
