"""support.why_it_helps: shifting noise, scale invariance, placement, norms, the committed results."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from support import why_it_helps
from support.experiments import batch_norm_layers, digits_mlp, load_digits
from support.seeds import best_rate, spread
from support.why_it_helps import ShiftingNoise, bn_before_relu, parameter_norm, record_norms, with_shifting_noise


def _standardized_batch(m: int = 64, c: int = 5) -> torch.Tensor:
    """A batch whose every feature has batch mean 0 and biased variance 1, as batch norm leaves it."""
    x = torch.randn(m, c, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 4 + 2
    return (x - x.mean(0)) / x.std(0, unbiased=False)


# --------------------------------------------------------------------------------------------
# ShiftingNoise
# --------------------------------------------------------------------------------------------


def test_shifting_noise_gives_each_feature_the_drawn_mean_and_scale():
    x = _standardized_batch()
    noise, twin = ShiftingNoise(5, shift=1.5, scale=3.0, seed=7), ShiftingNoise(5, shift=1.5, scale=3.0, seed=7)
    for _ in range(3):  # a new draw at every step
        b, s = twin.draw()
        y = noise(x)
        torch.testing.assert_close(y.mean(0), b.double())
        torch.testing.assert_close(y.std(0, unbiased=False), s.double())
    assert (b.abs() <= 1.5).all() and (s >= 1 / 3).all() and (s <= 3).all()
    assert not torch.allclose(s, torch.ones(5)) and not torch.allclose(b, torch.zeros(5))


def test_shifting_noise_draws_differ_from_step_to_step():
    noise = ShiftingNoise(50, seed=0)
    (b1, s1), (b2, s2) = noise.draw(), noise.draw()
    assert (b1 - b2).abs().mean() > 0.1 and (s1.log() - s2.log()).abs().mean() > 0.1


def test_shifting_noise_spreads_over_its_whole_range():
    b, s = ShiftingNoise(10_000, shift=2.0, scale=4.0, seed=1).draw()
    assert b.min() < -1.9 and b.max() > 1.9 and abs(b.mean()) < 0.1
    assert s.min() < 0.26 and s.max() > 3.9 and abs(s.log().mean()) < 0.05  # log-uniform: centred on 1


def test_shifting_noise_is_the_identity_in_evaluation_mode():
    x = _standardized_batch()
    noise = ShiftingNoise(5).eval()
    assert torch.equal(noise(x), x)


def test_shifting_noise_refuses_a_wrong_width_and_bad_ranges():
    with pytest.raises(ValueError, match=r"takes \(N, 5\), got \(4, 6\)"):
        ShiftingNoise(5)(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="scale >= 1"):
        ShiftingNoise(5, scale=0.5)
    with pytest.raises(ValueError, match="shift >= 0"):
        ShiftingNoise(5, shift=-1.0)


def test_with_shifting_noise_follows_every_batch_norm_layer_and_keeps_the_weights():
    plain = digits_mlp(seed=4)
    noisy = with_shifting_noise(digits_mlp(seed=4), seed=4)
    layers = list(noisy)
    for k, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm1d):
            assert isinstance(layers[k + 1], ShiftingNoise) and layers[k + 1].num_features == layer.num_features
    assert sum(isinstance(layer, ShiftingNoise) for layer in layers) == len(batch_norm_layers(plain)) == 3
    for a, b in zip((m for m in plain if isinstance(m, nn.Linear)), (m for m in noisy if isinstance(m, nn.Linear)),
                    strict=True):
        assert torch.equal(a.weight, b.weight)


# --------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------


def test_bn_before_relu_moves_each_hidden_batch_norm_before_its_relu():
    after = digits_mlp(seed=2)
    before = bn_before_relu(digits_mlp(seed=2))
    kinds = [type(m).__name__ for m in before]
    assert kinds == ["BatchNorm1d", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [m.num_features for m in batch_norm_layers(before)] == [784, 300, 100]
    assert torch.equal(before[1].weight, after[1].weight) and torch.equal(before[4].weight, after[4].weight)


def test_bn_before_relu_refuses_a_model_without_relu_then_batch_norm():
    with pytest.raises(ValueError, match="no ReLU followed by BatchNorm1d"):
        bn_before_relu(digits_mlp(hidden_bn=False))


def test_configs_differ_only_in_placement_and_noise():
    models = {key: config.model(5) for key, config in why_it_helps.CONFIGS.items()}
    assert [type(m).__name__ for m in models["after"]] == [type(m).__name__ for m in digits_mlp()]
    assert any(isinstance(m, ShiftingNoise) for m in models["noisy"])
    assert not any(isinstance(m, ShiftingNoise) for m in models["before"])
    assert batch_norm_layers(models["none"]) == []
    first = {key: next(m for m in model if isinstance(m, nn.Linear)).weight for key, model in models.items()}
    assert torch.equal(first["after"], first["before"]) and torch.equal(first["after"], first["noisy"])


def test_only_the_network_without_batch_norm_gets_standardized_pixels():
    digits = load_digits()
    assert torch.equal(why_it_helps.CONFIGS["after"].data(digits).x_train, digits.x_train)
    standardized = why_it_helps.CONFIGS["none"].data(digits).x_train
    assert standardized.mean(0).abs().max() < 1e-4 and standardized.std(0).max() > 0.9


# --------------------------------------------------------------------------------------------
# Scale invariance, on the digits network as the chapter states it
# --------------------------------------------------------------------------------------------


def _loss_and_grad(model: nn.Sequential, layer: nn.Linear, x, y):
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.item(), torch.cat([layer.weight.grad.flatten(), layer.bias.grad])


@pytest.mark.parametrize("before_relu", [False, True], ids=["after-relu", "before-relu"])
def test_scaling_a_layer_before_batch_norm_changes_nothing_and_divides_its_gradient(before_relu):
    digits = load_digits()
    x, y = digits.x_train[:64].double(), digits.y_train[:64]
    model = digits_mlp(seed=1).double()
    if before_relu:
        model = bn_before_relu(model)
    for bn in batch_norm_layers(model):
        bn.eps = 1e-12  # the proposition's exact case, eps -> 0
    layer = model[1]  # Linear(784, 300), followed by batch norm (through its ReLU or not)
    loss, grad = _loss_and_grad(model, layer, x, y)
    theta = torch.cat([layer.weight.detach().flatten(), layer.bias.detach()])
    a = 3.0
    with torch.no_grad():
        layer.weight *= a
        layer.bias *= a
    scaled_loss, scaled_grad = _loss_and_grad(model, layer, x, y)
    assert scaled_loss == pytest.approx(loss, rel=1e-10)
    torch.testing.assert_close(scaled_grad, grad / a, rtol=1e-7, atol=1e-12)
    # orthogonal to the parameters: cos(angle) is zero to rounding
    assert abs(grad @ theta) / (grad.norm() * theta.norm()) < 1e-8


def test_the_last_layer_is_not_scale_invariant():
    """A control: the output layer has no batch norm after it, and scaling it changes the loss."""
    digits = load_digits()
    model = digits_mlp(seed=1)
    x, y = digits.x_train[:64], digits.y_train[:64]
    loss = F.cross_entropy(model(x), y).item()
    with torch.no_grad():
        model[-1].weight *= 3
    assert abs(F.cross_entropy(model(x), y).item() - loss) > 0.01


def test_with_eps_the_scaled_layer_sees_eps_divided_by_a_squared():
    """BN_eps(a z) = BN_{eps/a^2}(z): the exact statement behind the proposition when eps > 0."""
    z = torch.randn(8, 3, dtype=torch.float64) * 0.5 + 1
    a, eps = 4.0, 0.3  # a large eps, so that the two sides differ when eps is misplaced
    scaled = F.batch_norm(a * z, None, None, training=True, eps=eps)
    assert torch.allclose(scaled, F.batch_norm(z, None, None, training=True, eps=eps / a**2))
    assert not torch.allclose(scaled, F.batch_norm(z, None, None, training=True, eps=eps), atol=1e-3)


# --------------------------------------------------------------------------------------------
# Norms
# --------------------------------------------------------------------------------------------


def test_parameter_norm_counts_the_weights_and_the_bias():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(2.0)
    assert parameter_norm(layer) == pytest.approx(math.sqrt(6 * 1 + 2 * 4))


def test_record_norms_samples_training_steps_only():
    layer = nn.Linear(4, 2)
    norms = record_norms(layer, every=2)
    x = torch.randn(3, 4)
    initial = parameter_norm(layer)
    for step in range(5):
        layer(x)
        with torch.no_grad():
            layer.weight += 1.0  # a "step": the norm changes
        if step == 1:
            layer.eval()
            layer(x)  # a measurement, not a step
            layer.train()
    assert len(norms) == 3  # steps 0, 2 and 4
    assert norms[0] == pytest.approx(initial)  # taken before the first step
    assert norms[0] < norms[1] < norms[2] < parameter_norm(layer)


def test_a_sweep_run_is_measured_on_held_out_digits_and_records_its_norms(monkeypatch):
    monkeypatch.setattr(why_it_helps, "EPOCHS", 1)
    record = why_it_helps._run("noisy", 0.1, seed=0, validation=True)
    assert set(record) == {"train_loss", "train_accuracy", "accuracy", "diverged", "norms"}
    assert len(record["accuracy"]) == 1 and 0.5 < record["accuracy"][0] <= 1 and not record["diverged"]
    steps = math.ceil((4000 - why_it_helps.N_VALIDATION) / why_it_helps.BATCH_SIZE)
    assert [len(n) for n in record["norms"]] == [math.ceil(steps / why_it_helps.NORM_EVERY) + 1] * 3
    first = digits_mlp(seed=0)[1]
    assert record["norms"][0][0] == pytest.approx(parameter_norm(first))


# --------------------------------------------------------------------------------------------
# The committed results
# --------------------------------------------------------------------------------------------


def test_the_committed_best_rates_are_the_sweeps_best_and_the_curves_use_them():
    report = why_it_helps.load()
    assert report["parameters"]["rates"] == list(why_it_helps.RATES)
    for key in why_it_helps.CONFIGS:
        assert report["best_rate"][key] == best_rate(report["sweep"][key], diverged=why_it_helps.CHANCE)
        assert len(report["curves"][key]["accuracy"]) == len(why_it_helps.CURVE_SEEDS)


def test_the_committed_norms_grow_faster_at_higher_rates():
    """The chapter's claim: a BN-preceded layer's norm grows during training, more at higher rates."""
    report = why_it_helps.load()
    growth = {lr: spread([run[-1] / run[0] for run in
                          (norms[1] for norms in report["sweep"]["after"][str(lr)]["norms"])]).mean
              for lr in why_it_helps.RATES[:3]}
    rates = sorted(growth)
    assert all(growth[lr] > 1 for lr in rates)
    assert growth[rates[0]] < growth[rates[1]] < growth[rates[2]]
