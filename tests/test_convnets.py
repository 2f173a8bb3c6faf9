"""support.convnets: the small CNN for the digits and its choice of normalization layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from support import convnets
from support.convnets import digits_cnn, norm_layer


def test_every_norm_gives_the_same_initial_convolution_and_linear_weights():
    networks = {norm: digits_cnn(norm, seed=3) for norm in convnets.NORMS}
    plain = networks["none"]
    for norm, network in networks.items():
        for k in (1, 5, 10):  # the two convolutions and the classifier
            assert torch.equal(network[k].weight, plain[k].weight), (norm, k)
    assert not torch.equal(digits_cnn("batch", seed=4)[1].weight, networks["batch"][1].weight)


def test_a_convolution_before_a_normalization_has_no_bias():
    assert digits_cnn("batch")[1].bias is None and digits_cnn("group")[5].bias is None
    assert digits_cnn("none")[1].bias is not None


def test_the_norms_normalize_over_the_axes_their_names_say():
    x = torch.randn(4, 8, 5, 5) * 3 + 2
    assert isinstance(norm_layer("batch", 8), nn.BatchNorm2d)
    layer = norm_layer("layer", 8)(x)  # each example over (C, H, W)
    assert torch.allclose(layer.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5)
    instance = norm_layer("instance", 8)(x)  # each example and channel over (H, W)
    assert torch.allclose(instance.mean(dim=(2, 3)), torch.zeros(4, 8), atol=1e-5)
    group = norm_layer("group", 8)(x)  # each example over groups of 2 channels
    assert torch.allclose(group.reshape(4, convnets.GROUPS, -1).mean(dim=2), torch.zeros(4, convnets.GROUPS), atol=1e-5)
    assert not torch.allclose(group.mean(dim=(2, 3)), torch.zeros(4, 8), atol=1e-3)  # not per channel
    assert isinstance(norm_layer("none", 8), nn.Identity)


def test_the_network_maps_rows_of_pixels_to_ten_logits():
    logits = digits_cnn("instance")(torch.rand(3, 784))
    assert logits.shape == (3, 10)


def test_an_unknown_norm_is_refused_by_name():
    with pytest.raises(ValueError, match="norm must be one of none, batch"):
        digits_cnn("batchnorm")
    with pytest.raises(ValueError, match="got 'weight'"):
        norm_layer("weight", 4)
