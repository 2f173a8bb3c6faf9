"""bnlib.torch's folding: evaluation-mode batch norm merged into the linear layer next to it.

Every fold is checked two ways: against PyTorch's ``torch.nn.utils.fusion`` where it has the
same operation (batch norm after a linear layer or a convolution), and by its definition,
``folded(x) == bn(layer(x))`` (or ``layer(bn(x))``), in float64 to 1e-12. The batch norms
have running statistics far from 0 and 1 and random gamma and beta, so that a fold that
forgets any of them fails.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

import bnlib.torch as bnt
from support.experiments import digits_mlp, load_digits

#: constructors of the batch norms that fold, by name: (C, the input's number of dimensions, options)
BATCH_NORMS = {
    "nn.BatchNorm": lambda c, dim, **kw: (nn.BatchNorm2d if dim == 4 else nn.BatchNorm1d)(c, **kw),
    "bnlib.BatchNorm1d": lambda c, dim, **kw: bnt.BatchNorm1d(c, **kw),
    "bnlib.SyncBatchNorm": lambda c, dim, **kw: bnt.SyncBatchNorm(c, **kw),
}
BN_OPTIONS = [{}, {"affine": False}, {"bias": False}, {"eps": 0.3}]


def trained_bn(kind: str, c: int, x_like: torch.Tensor, **options) -> nn.Module:
    """A batch norm of ``kind`` whose running statistics have seen a few batches shaped like ``x_like``."""
    bn = BATCH_NORMS[kind](c, x_like.dim(), dtype=torch.float64, **options)
    g = torch.Generator().manual_seed(c)
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.copy_(torch.rand(c, generator=g, dtype=torch.float64) * 2 - 0.5)
        if bn.bias is not None:
            bn.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        for _ in range(3):
            batch = torch.randn(x_like.shape, generator=g, dtype=torch.float64) * 3 + 2
            bn(batch)
    assert (bn.running_mean - 0.54).abs().max() < 0.5, "the running mean did not move towards the data's mean, 2"
    return bn.eval()


def assert_close(actual, expected, what, rtol=1e-12, atol=1e-12):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------------------------
# After a linear layer or a convolution: against torch.nn.utils.fusion
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BATCH_NORMS)
@pytest.mark.parametrize("options", BN_OPTIONS, ids=str)
@pytest.mark.parametrize("linear_bias", [True, False])
def test_fold_into_linear_is_pytorchs_fusion_and_computes_bn_of_linear(kind, options, linear_bias):
    linear = nn.Linear(6, 4, bias=linear_bias, dtype=torch.float64).eval()
    bn = trained_bn(kind, 4, torch.empty(8, 4), **options)
    folded = bnt.fold_into_linear(linear, bn)
    assert type(folded) is nn.Linear and not folded.training and folded.bias is not None
    # PyTorch's fusion takes its own batch norms only, and (torch 2.13) fails on one without
    # weight or bias (affine=False, bias=False): it multiplies by None. This fold takes them.
    if kind == "nn.BatchNorm" and bn.weight is not None and bn.bias is not None:
        theirs = fuse_linear_bn_eval(linear, bn)
        assert_close(folded.weight, theirs.weight, "weight")
        assert_close(folded.bias, theirs.bias, "bias")
    x = torch.randn(10, 6, dtype=torch.float64) * 4
    with torch.no_grad():
        assert_close(folded(x), bn(linear(x)), "folded(x) against bn(linear(x))")


@pytest.mark.parametrize("kind", ["nn.BatchNorm", "bnlib.SyncBatchNorm"])
@pytest.mark.parametrize("conv_kwargs", [{"padding": 1}, {"padding": 2, "groups": 2, "bias": False},
                                         {"stride": 2, "padding_mode": "reflect", "padding": 1}], ids=str)
def test_fold_into_conv_is_pytorchs_fusion_and_computes_bn_of_conv(kind, conv_kwargs):
    conv = nn.Conv2d(4, 6, 3, dtype=torch.float64, **conv_kwargs).eval()
    bn = trained_bn(kind, 6, torch.empty(5, 6, 7, 7))
    folded = bnt.fold_into_conv(conv, bn)
    assert type(folded) is nn.Conv2d and folded.padding == conv.padding and folded.groups == conv.groups
    theirs = fuse_conv_bn_eval(conv, bn)
    assert_close(folded.weight, theirs.weight, "weight")
    assert_close(folded.bias, theirs.bias, "bias")
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64) * 2 + 1
    with torch.no_grad():
        assert_close(folded(x), bn(conv(x)), "folded(x) against bn(conv(x))")


def test_fold_into_conv1d_uses_the_channels_of_a_1d_convolution():
    conv = nn.Conv1d(3, 5, 3, padding=1, dtype=torch.float64).eval()
    bn = trained_bn("nn.BatchNorm", 5, torch.empty(4, 5, 11))
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    with torch.no_grad():
        assert_close(bnt.fold_into_conv(conv, bn)(x), bn(conv(x)), "Conv1d")


def test_float32_layers_fold_like_pytorchs_fusion():
    linear = nn.Linear(6, 4).eval()
    bn = trained_bn("nn.BatchNorm", 4, torch.empty(8, 4)).float()
    folded, theirs = bnt.fold_into_linear(linear, bn), fuse_linear_bn_eval(linear, bn)
    assert folded.weight.dtype == torch.float32
    assert_close(folded.weight, theirs.weight, "weight", rtol=1e-6, atol=1e-6)
    assert_close(folded.bias, theirs.bias, "bias", rtol=1e-6, atol=1e-6)


def test_folding_leaves_its_inputs_untouched_and_keeps_requires_grad():
    linear = nn.Linear(6, 4, dtype=torch.float64).eval()
    linear.weight.requires_grad_(False)
    bn = trained_bn("nn.BatchNorm", 4, torch.empty(8, 4))
    before = {k: v.clone() for k, v in {**linear.state_dict(), **{"bn." + k: v for k, v in bn.state_dict().items()}}
              .items()}
    folded = bnt.fold_into_linear(linear, bn)
    after = {**linear.state_dict(), **{"bn." + k: v for k, v in bn.state_dict().items()}}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert folded.weight is not linear.weight and not folded.weight.requires_grad


# ---------------------------------------------------------------------------------------------
# Before a linear layer (batch norm after a ReLU)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BATCH_NORMS)
@pytest.mark.parametrize("options", BN_OPTIONS, ids=str)
@pytest.mark.parametrize("linear_bias", [True, False])
def test_fold_into_next_linear_computes_linear_of_bn(kind, options, linear_bias):
    bn = trained_bn(kind, 6, torch.empty(8, 6), **options)
    linear = nn.Linear(6, 3, bias=linear_bias, dtype=torch.float64).eval()
    folded = bnt.fold_into_next_linear(bn, linear)
    assert type(folded) is nn.Linear and folded.weight.shape == linear.weight.shape
    x = torch.relu(torch.randn(10, 6, dtype=torch.float64) * 3)
    with torch.no_grad():
        assert_close(folded(x), linear(bn(x)), "folded(x) against linear(bn(x))")


# ---------------------------------------------------------------------------------------------
# A whole model: the course's digits network
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_folded_digits_network_makes_the_same_predictions(digits):
    """784-300-100-10 with three batch norms (each before a linear layer) folds into three linear layers."""
    model = digits_mlp().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = digits.x_train.double(), digits.y_train
    for start in range(0, 640, 64):  # ten steps: running statistics and gamma, beta move away from 0, 1
        loss = nn.functional.cross_entropy(model(x[start : start + 64]), y[start : start + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    folded = bnt.fold_batch_norms(model)
    assert [type(m) for m in folded] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert not folded.training and model[0].running_mean.abs().max() > 1
    with torch.no_grad():
        logits, folded_logits = model(digits.x_test.double()), folded(digits.x_test.double())
    assert torch.equal(logits.argmax(1), folded_logits.argmax(1))
    assert_close(folded_logits, logits, "logits of the 1,000 test digits", rtol=1e-10, atol=1e-10)


def test_fold_batch_norms_folds_into_the_layer_before_when_there_is_one():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(12, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    model(torch.randn(6, 1, 4, 4, dtype=torch.float64))  # running statistics
    model.eval()
    folded = bnt.fold_batch_norms(model)
    assert [type(m) for m in folded] == [nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear, nn.Linear]
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        assert_close(folded(x), model(x), "a small convolutional model")


# ---------------------------------------------------------------------------------------------
# What cannot fold, and says why
# ---------------------------------------------------------------------------------------------


def test_a_batch_norm_in_training_mode_cannot_fold():
    bn = trained_bn("nn.BatchNorm", 4, torch.empty(8, 4)).train()
    with pytest.raises(ValueError, match="training mode: it normalizes with each batch's own statistics"):
        bnt.fold_into_linear(nn.Linear(6, 4).double().eval(), bn)
    with pytest.raises(ValueError, match="training mode"):
        bnt.fold_into_next_linear(bn, nn.Linear(4, 2).double().eval())


def test_a_layer_in_training_mode_cannot_fold():
    bn = trained_bn("nn.BatchNorm", 4, torch.empty(8, 4))
    with pytest.raises(ValueError, match=r"the linear layer Linear is in training mode: call model.eval\(\)"):
        bnt.fold_into_linear(nn.Linear(6, 4).double(), bn)


def test_a_batch_norm_without_running_statistics_cannot_fold():
    bn = nn.BatchNorm1d(4, track_running_stats=False).double().eval()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        bnt.fold_into_linear(nn.Linear(6, 4).double().eval(), bn)


@pytest.mark.parametrize("fold, layer, features", [
    (bnt.fold_into_linear, nn.Linear(6, 5), "the linear layer before it has 5 outputs"),
    (bnt.fold_into_conv, nn.Conv2d(2, 3, 1), "the convolution before it has 3 outputs"),
    (lambda layer, bn: bnt.fold_into_next_linear(bn, layer), nn.Linear(5, 2),
     "the linear layer after it takes 5 inputs"),
])
def test_shapes_that_do_not_match_cannot_fold(fold, layer, features):
    bn = trained_bn("nn.BatchNorm", 4, torch.empty(8, 4))
    with pytest.raises(ValueError, match=f"normalizes 4 features but {features}"):
        fold(layer.double().eval(), bn)


def test_wrong_layer_types_are_named():
    bn = trained_bn("nn.BatchNorm", 4, torch.empty(8, 4))
    with pytest.raises(TypeError, match="expects an nn.Linear, got Conv2d"):
        bnt.fold_into_linear(nn.Conv2d(1, 4, 1).eval(), bn)
    with pytest.raises(TypeError, match="expected a batch-norm layer, got ReLU"):
        bnt.fold_into_linear(nn.Linear(3, 4).eval(), nn.ReLU())
    with pytest.raises(ValueError, match="transposed"):
        bnt.fold_into_conv(nn.ConvTranspose2d(2, 4, 3).double().eval(), bn)


def test_a_batch_norm_between_a_relu_and_a_convolution_cannot_fold():
    """Before a zero-padded convolution, folding would be wrong at the borders: refused, with the position."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 3, padding=1)).eval()
    with pytest.raises(ValueError, match=r"layer 2 \(BatchNorm2d\) comes after ReLU and before Conv2d"):
        bnt.fold_batch_norms(model)
    assert isinstance(copy.deepcopy(model)[2], nn.BatchNorm2d)  # the model itself is untouched
