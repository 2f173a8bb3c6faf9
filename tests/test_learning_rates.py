"""support.learning_rates: the five variants, the sweep's choice of rates, the committed results."""

from __future__ import annotations

import math

import pytest
import torch

from support import learning_rates
from support.experiments import batch_norm_layers, load_digits
from support.seeds import best_rate


def test_variants_differ_only_in_batch_norm_and_pixels():
    digits = load_digits()
    raw = learning_rates.VARIANTS["raw"]
    assert torch.equal(raw.data(digits).x_train, digits.x_train)
    assert learning_rates.VARIANTS["scaled"].data(digits).x_train.max() == 1.0
    standardized = learning_rates.VARIANTS["standardized"].data(digits).x_train
    assert standardized.mean(0).abs().max() < 1e-4
    assert len(batch_norm_layers(learning_rates.VARIANTS["bn"].model(0))) == 3
    assert len(batch_norm_layers(learning_rates.VARIANTS["input_bn"].model(0))) == 1
    assert batch_norm_layers(raw.model(0)) == []
    with_bn, without = learning_rates.VARIANTS["bn"].model(2), raw.model(2)
    assert torch.equal(with_bn[1].weight, without[0].weight)  # same initial weights for a seed


def test_an_unknown_pixel_preparation_is_refused():
    with pytest.raises(ValueError, match="pixels must be"):
        learning_rates.Variant("x", False, False, "inverted").data(load_digits())


def test_a_sweep_run_is_measured_on_held_out_training_digits(monkeypatch):
    monkeypatch.setattr(learning_rates, "EPOCHS", 1)
    record = learning_rates._run("standardized", 0.1, seed=0, validation=True)
    assert set(record) == {"train_loss", "accuracy", "diverged"}
    assert len(record["accuracy"]) == 1 and 0.5 < record["accuracy"][0] <= 1 and not record["diverged"]
    assert learning_rates._data("standardized", True).x_test.shape == (learning_rates.N_VALIDATION, 784)


def test_the_committed_best_rates_are_the_sweeps_best_and_the_curves_use_them():
    report = learning_rates.load()
    for key in learning_rates.VARIANTS:
        assert report["best_rate"][key] == best_rate(report["sweep"][key], diverged=learning_rates.CHANCE)
        assert len(report["curves"][key]["accuracy"]) == len(learning_rates.CURVE_SEEDS)
    assert report["parameters"]["rates"] == list(learning_rates.RATES)


def test_the_committed_sweep_shows_what_the_chapters_say():
    """The digits and standardization chapters' qualitative claims, on the committed numbers."""
    report = learning_rates.load()

    def mean_final(key, lr):
        runs = report["sweep"][key][str(lr)]["accuracy"]
        return sum(learning_rates.CHANCE if math.isnan(r[-1]) else r[-1] for r in runs) / len(runs)

    def good(key):
        return [lr for lr in learning_rates.RATES if mean_final(key, lr) >= 0.9]

    # batch norm tolerates a wider range of rates than either network without it
    assert max(good("bn")) / min(good("bn")) > max(good("standardized")) / min(good("standardized"))
    assert max(good("bn")) / min(good("bn")) > max(good("scaled")) / min(good("scaled"))
    # raw pixels train, at rates well below the standardized network's best
    assert report["best_rate"]["raw"] < report["best_rate"]["standardized"] / 10
    assert mean_final("raw", report["best_rate"]["raw"]) > 0.85
