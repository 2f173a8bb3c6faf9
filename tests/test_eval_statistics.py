"""support.eval_statistics: recomputed statistics, batches in either mode, the committed results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from support import eval_statistics
from support.eval_statistics import accuracy_in_batches, recompute_statistics


def test_recomputed_statistics_are_the_plain_average_over_one_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3, momentum=0.1))
    model(torch.randn(16, 3) * 5 + 7)  # some running statistics to forget
    x = torch.randn(64, 3, dtype=torch.float32) * torch.tensor([1.0, 2.0, 3.0]) + torch.tensor([0.0, 1.0, -2.0])
    recomputed = recompute_statistics(model, x, batch_size=16, seed=3)
    bn = recomputed[0]
    order = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    batches = [x[order[k:k + 16]] for k in range(0, 64, 16)]
    torch.testing.assert_close(bn.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0))
    assert not bn.training and bn.momentum == 0.1  # returned in evaluation mode, momentum as it was
    assert bn.num_batches_tracked.item() == 4
    assert model[0].num_batches_tracked.item() == 1  # the original is untouched


def test_accuracy_in_batches_leaves_the_model_as_it_was():
    torch.manual_seed(1)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3))
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    before = model[0].running_mean.clone()
    in_train = accuracy_in_batches(model, x, y, 8, training=True)
    in_eval = [accuracy_in_batches(model, x, y, b, training=False) for b in (1, 40)]
    assert torch.equal(model[0].running_mean, before) and model.training
    assert 0 <= in_train <= 1 and in_eval[0] == in_eval[1]  # evaluation mode ignores the batch
    with pytest.raises(ValueError, match="more than 1 value"):
        accuracy_in_batches(model, x, y, 1, training=True)


def test_the_committed_results_have_every_measurement_for_every_seed():
    report = eval_statistics.load()
    runs = report["runs"]
    n = len(eval_statistics.SEEDS)
    for key in ("running", "recomputed", "recomputed_on_test", "train_mode_sorted", "after_pairs"):
        assert len(runs[key]) == n and all(0 <= a <= 1 for a in runs[key])
    assert np.shape(runs["train_mode"]) == (n, len(eval_statistics.BATCH_SIZES))
    # what the chapter teaches: recomputing helps on average, pairs in training mode do not
    assert np.mean(runs["recomputed"]) > np.mean(runs["running"])
    assert np.mean(runs["after_pairs"]) < np.mean(runs["running"])
