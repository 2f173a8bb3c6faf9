"""support.batch_sizes: the normalized networks, the linear scaling rule, one run, the committed results."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from support import batch_sizes
from support.batch_sizes import learning_rate, normalized_mlp
from support.seeds import best_rate


def test_the_networks_differ_only_in_their_hidden_normalization_layers():
    networks = {norm: normalized_mlp(norm, seed=2) for norm in batch_sizes.NORMS}
    kinds = {norm: [type(m) for m in net] for norm, net in networks.items()}
    assert kinds["batch"] == [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear]
    assert kinds["layer"][2] is nn.LayerNorm and kinds["group"][5] is nn.GroupNorm
    assert networks["group"][2].num_groups == batch_sizes.GROUPS
    for k in (0, 3, 6):
        assert torch.equal(networks["layer"][k].weight, networks["batch"][k].weight)
        assert torch.equal(networks["group"][k].weight, networks["batch"][k].weight)


def test_per_example_normalizations_ignore_the_batch_mates_and_batch_norm_does_not():
    x = torch.randn(8, 784)
    for norm in ("layer", "group"):
        net = normalized_mlp(norm)
        assert torch.allclose(net(x)[:2], net(x[:2]), atol=1e-5), norm
    net = normalized_mlp("batch")
    assert not torch.allclose(net(x)[:2], net(x[:2]), atol=1e-3)


def test_the_learning_rate_is_proportional_to_the_batch_size():
    assert learning_rate(0.1, batch_sizes.REFERENCE_BATCH) == pytest.approx(0.1)
    assert learning_rate(0.1, 2) == pytest.approx(0.1 * 2 / 64) and learning_rate(0.1, 256) == pytest.approx(0.4)


def test_an_unknown_normalization_is_refused_by_name():
    with pytest.raises(ValueError, match="norm must be one of batch, layer, group, got 'instance'"):
        normalized_mlp("instance")


def test_a_run_records_validation_test_and_training_accuracy(monkeypatch):
    monkeypatch.setattr(batch_sizes, "EPOCHS", 1)
    record = batch_sizes._run("group", 64, 0.03, seed=0)
    assert set(record) == {"accuracy", "test_accuracy", "train_accuracy", "diverged"}
    assert 0.5 < record["accuracy"][0] <= 1 and 0.5 < record["test_accuracy"][0] <= 1 and not record["diverged"]


def test_the_committed_results_use_the_rates_chosen_at_the_reference_batch():
    report = batch_sizes.load()
    for norm in batch_sizes.NORMS:
        assert report["best_scale"][norm] == best_rate(report["sweep"][norm], diverged=batch_sizes.CHANCE)
        for b in batch_sizes.BATCH_SIZES:
            runs = report["runs"][norm][str(b)]["test_accuracy"]
            assert len(runs) == len(batch_sizes.SEEDS) and all(len(r) == batch_sizes.EPOCHS for r in runs)
    assert report["parameters"]["batch_sizes"] == list(batch_sizes.BATCH_SIZES)


def test_the_committed_results_show_batch_norm_degrading_at_small_batches():
    """The chapter's claim: from batches of 64 to 2, batch norm loses much, layer and group norm little."""
    report = batch_sizes.load()

    def mean_final(norm, b):
        runs = report["runs"][norm][str(b)]["test_accuracy"]
        return sum(batch_sizes.CHANCE if math.isnan(r[-1]) else r[-1] for r in runs) / len(runs)

    reference, smallest = batch_sizes.REFERENCE_BATCH, min(batch_sizes.BATCH_SIZES)
    assert mean_final("batch", reference) - mean_final("batch", smallest) > 0.1
    for norm in ("layer", "group"):
        assert abs(mean_final(norm, reference) - mean_final(norm, smallest)) < 0.03
