"""support.forgot_train: the buggy loop really trains with frozen statistics; the committed results."""

from __future__ import annotations

import math

import torch
from torch import nn

from support import forgot_train
from support.experiments import Digits, digits_mlp, load_digits


def small_digits() -> Digits:
    digits = load_digits()
    return Digits(digits.x_train[:640], digits.y_train[:640], digits.x_test[:200], digits.y_test[:200])


def test_after_the_first_epoch_the_statistics_are_frozen_and_the_weights_still_learn():
    data = small_digits()
    after_one, after_two = digits_mlp(seed=0), digits_mlp(seed=0)
    forgot_train.train_forgetting_train_mode(after_one, data, epochs=1, lr=0.01, seed=0)
    record = forgot_train.train_forgetting_train_mode(after_two, data, epochs=2, lr=0.01, seed=0)
    statistics = [name for name in after_one.state_dict() if "running" in name or "tracked" in name]
    assert len(statistics) == 9  # three layers: running_mean, running_var, num_batches_tracked
    for name in statistics:  # epoch 2 changed no statistic...
        torch.testing.assert_close(after_two.state_dict()[name], after_one.state_dict()[name])
    assert not torch.equal(after_two[1].weight, after_one[1].weight)  # ...but it changed the weights
    assert not after_two.training  # and the loop leaves the model in evaluation mode
    assert record["first_nan_epoch"] is None and len(record["train_loss"]) == len(record["accuracy"]) == 2


def test_a_diverged_run_is_recorded_with_its_first_nan_epoch():
    model = nn.Sequential(nn.BatchNorm1d(784), nn.Linear(784, 10))
    record = forgot_train.train_forgetting_train_mode(model, small_digits(), epochs=3, lr=1e6, seed=0)
    assert record["first_nan_epoch"] is not None and math.isnan(record["train_loss"][-1])


def test_the_committed_results_cover_every_loop_rate_and_seed():
    report = forgot_train.load()
    for loop in forgot_train.LOOPS:
        for lr in forgot_train.RATES:
            runs = report["runs"][loop][str(lr)]
            assert len(runs["accuracy"]) == len(forgot_train.SEEDS)
            assert all(len(a) == forgot_train.EPOCHS for a in runs["accuracy"])
    # a NaN network predicts class 0 for every digit: its accuracy is the share of zeros
    for accuracy, nan_epoch in zip(report["runs"]["forgot"]["0.1"]["accuracy"],
                                   report["runs"]["forgot"]["0.1"]["first_nan_epoch"], strict=True):
        if nan_epoch is not None:
            assert accuracy[-1] == report["share_of_zeros_in_test"]
