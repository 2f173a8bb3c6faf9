"""autograder.judging.static: what the student's source uses, through aliases, imports and helpers."""

from __future__ import annotations

import pytest
from student_code import ALTERNATIVES, ASSIGNMENTS, DELEGATING, solution_notebook, solution_sources

from autograder.judging.static import Analysis
from autograder.notebook import CELL_SEPARATOR, student_source


@pytest.mark.parametrize(
    "source,target,family",
    [
        ("from bnlib.numpy import forward_train as ft\nbn_forward_train = ft\n", "bn_forward_train", "numpy"),
        ("import bnlib\ndef helper(x):\n    return bnlib.numpy.batch_mean(x)\n"
         "def bn_forward_train(x, g, b, eps=1e-5):\n    return helper(x), None\n", "bn_forward_train", "numpy"),
        ("def bn_forward_eval(x, *a):\n    import torch\n    return torch.tensor(x).numpy()\n",
         "bn_forward_eval", "numpy"),
        ("import torch.nn.functional as F\nclass BatchNorm1d:\n    def forward(self, x):\n"
         "        return F.batch_norm(x, None, None, training=True)\n", "BatchNorm1d", "torch"),
        ("from torch import nn\nclass BatchNorm1d(nn.BatchNorm1d):\n    pass\n", "BatchNorm1d", "torch"),
        ("import torch\nclass BatchNormFunction:\n    def forward(ctx, x):\n"
         "        return torch.layer_norm(x.T, x.shape[:1]).T\n", "BatchNormFunction", "torch"),
    ],
)
def test_source_analysis_finds_delegation_through_aliases_and_helpers(source, target, family):
    assert Analysis(source, family).uses.get(target)


def test_source_analysis_finds_autograd_in_the_backward_pass():
    source = DELEGATING["autograd_backward"][1]["solution_batch_norm_function"]
    assert Analysis(source, "torch").backward_uses["BatchNormFunction"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_source_analysis_accepts_the_solutions_and_alternatives(assignment):
    for sources in [solution_sources(assignment), *ALTERNATIVES[assignment]]:
        family = "torch" if assignment == "bn-torch" else "numpy"
        analysis = Analysis(CELL_SEPARATOR.join(sources.values()), family)
        assert not any(analysis.uses.values()), analysis.uses
        assert not any(analysis.backward_uses.values()), analysis.backward_uses


def test_student_source_leaves_out_the_locked_cells():
    nb = solution_notebook("bn-torch")
    source = student_source(nb)
    assert "class BatchNorm1d(nn.Module)" in source
    assert "nn.BatchNorm1d(" not in source  # the visible tests compare with it; they are not the student's
