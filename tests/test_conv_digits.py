"""support.conv_digits: the two networks, one run, the committed sweep."""

from __future__ import annotations

import math

from torch import nn

from support import conv_digits
from support.convnets import digits_cnn
from support.experiments import batch_norm_layers
from support.seeds import best_rate


def test_the_two_networks_differ_only_in_batch_norm():
    bn, plain = (digits_cnn(conv_digits.CONFIGS[key]["norm"], seed=1) for key in ("bn", "plain"))
    assert len(batch_norm_layers(bn)) == 2 and batch_norm_layers(plain) == []
    swapped = [nn.Identity if isinstance(m, nn.BatchNorm2d) else type(m) for m in bn]
    assert swapped == [type(m) for m in plain]


def test_a_run_is_measured_on_validation_and_test_digits_every_epoch(monkeypatch):
    monkeypatch.setattr(conv_digits, "EPOCHS", 1)
    record = conv_digits._run("bn", 0.1, seed=0)
    assert set(record) == {"train_loss", "accuracy", "test_accuracy", "diverged"}
    assert len(record["accuracy"]) == len(record["test_accuracy"]) == 1 and not record["diverged"]
    assert 0.5 < record["accuracy"][0] <= 1 and 0.5 < record["test_accuracy"][0] <= 1
    assert conv_digits.digits(validation=True).x_test.shape == (conv_digits.N_VALIDATION, 784)
    assert conv_digits.digits().x_train.max() == 1.0


def test_the_committed_best_rates_are_the_sweeps_best_on_validation_digits():
    report = conv_digits.load()
    for key in conv_digits.CONFIGS:
        assert report["best_rate"][key] == best_rate(report["runs"][key], diverged=conv_digits.CHANCE)
        for lr in conv_digits.RATES:
            accuracy = report["runs"][key][str(lr)]["test_accuracy"]
            assert len(accuracy) == len(conv_digits.SEEDS) and all(len(r) == conv_digits.EPOCHS for r in accuracy)
    assert report["parameters"]["rates"] == list(conv_digits.RATES)


def test_the_committed_sweep_shows_what_the_chapter_says():
    """Batch norm learns at the smallest rate, where the network without it barely moves."""
    report = conv_digits.load()

    def mean_final(key, lr):
        runs = report["runs"][key][str(lr)]["accuracy"]
        return sum(conv_digits.CHANCE if math.isnan(r[-1]) else r[-1] for r in runs) / len(runs)

    low = min(conv_digits.RATES)
    assert mean_final("bn", low) > 0.9 > mean_final("plain", low) + 0.2
    assert abs(mean_final("bn", report["best_rate"]["bn"]) - mean_final("plain", report["best_rate"]["plain"])) < 0.02
