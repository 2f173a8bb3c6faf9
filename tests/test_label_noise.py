"""support.label_noise: the configurations, the noisy digits, one run, the committed results."""

from __future__ import annotations

import torch
from torch import nn

from support import label_noise
from support.experiments import GhostBatchNorm1d, batch_norm_layers, load_digits
from support.seeds import best_rate


def test_configurations_change_only_the_noise_of_the_statistics_or_add_dropout():
    ghost = label_noise.CONFIGS["bn-8"].model(1)
    assert [type(m) for m in batch_norm_layers(ghost)] == [GhostBatchNorm1d, GhostBatchNorm1d]
    assert all(m.ghost_size == 8 for m in batch_norm_layers(ghost))
    assert not any(isinstance(m, nn.Dropout) for m in ghost)
    dropout = label_noise.CONFIGS["dropout"].model(1)
    assert batch_norm_layers(dropout) == [] and sum(isinstance(m, nn.Dropout) for m in dropout) == 2
    plain = label_noise.CONFIGS["plain"].model(1)
    assert [type(m) for m in plain] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert torch.equal(ghost[0].weight, plain[0].weight) and torch.equal(dropout[0].weight, plain[0].weight)


def test_the_noisy_digits_keep_clean_test_labels():
    noisy, clean = label_noise.noisy_digits(), load_digits()
    right = (noisy.y_train == clean.y_train).float().mean().item()
    assert 0.70 < right < 0.76  # 70 % kept, plus a tenth of the 30 % replaced by the right digit
    assert torch.equal(noisy.y_test, clean.y_test)
    assert noisy.x_train.max() == 1.0  # pixels divided by 255
    assert label_noise.noisy_digits(validation=True).x_test.shape == (label_noise.N_VALIDATION, 784)


def test_one_run_records_noisy_validation_and_clean_test_accuracy_per_epoch(monkeypatch):
    monkeypatch.setattr(label_noise, "EPOCHS", 2)
    record = label_noise._run("bn-32", 0.03, seed=0)
    assert len(record["accuracy"]) == len(record["train_accuracy"]) == len(record["test_accuracy"]) == 2
    assert not record["diverged"]
    assert record["test_accuracy"][-1] > record["accuracy"][-1]  # clean labels are easier to hit than noisy ones


def test_the_committed_results_cover_every_configuration_rate_and_seed():
    report = label_noise.load()
    for key in label_noise.CONFIGS:
        assert report["best_rate"][key] == best_rate(report["runs"][key], diverged=label_noise.CHANCE)
        for lr in label_noise.RATES:
            runs = report["runs"][key][str(lr)]
            assert len(runs["test_accuracy"]) == len(label_noise.SEEDS)
            assert all(len(r) == label_noise.EPOCHS for r in runs["test_accuracy"])
    assert report["parameters"]["rates"] == list(label_noise.RATES)
