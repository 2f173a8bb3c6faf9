r"""A small convolutional network for the digits, with a choice of normalization layer.

The chapters "Batch norm for convolutions" and "The normalization family" train the same
tiny CNN on the 28×28 digits with different normalization layers (or none), so that two
networks built with one seed differ only in that layer::

    Unflatten → Conv2d(1, 8, 3, padding=1) → norm(8)  → ReLU → MaxPool2d(2)    (8, 14, 14)
              → Conv2d(8, 16, 3, padding=1) → norm(16) → ReLU → MaxPool2d(2)   (16, 7, 7)
              → Flatten → Linear(784, 10)

``norm`` is one of :data:`NORMS`: PyTorch's ``BatchNorm2d``, ``GroupNorm`` with
:data:`GROUPS` groups, ``GroupNorm(1, C)`` (layer norm over each example's ``(C, H, W)``
values, with one ``gamma`` and ``beta`` per channel), ``GroupNorm(C, C)`` (instance norm), or
nothing. It takes the ``(N, 784)`` rows of :class:`support.experiments.Digits`, so that
:func:`support.experiments.train` trains it as it trains the 784-300-100-10 network.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NORMS", "GROUPS", "CHANNELS", "norm_layer", "digits_cnn"]

#: The normalization layers :func:`digits_cnn` can put after each convolution.
NORMS = ("none", "batch", "group", "layer", "instance")
#: Groups of the group norm: 2 channels per group in the first block, 4 in the second.
GROUPS = 4
#: Channels of the two convolutions.
CHANNELS = (8, 16)


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalization layer ``norm`` (one of :data:`NORMS`) for ``channels`` channels.

    Raises:
        ValueError: for a name not in :data:`NORMS`.
    """
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(GROUPS, channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    if norm == "instance":
        return nn.GroupNorm(channels, channels)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def digits_cnn(norm: str = "batch", *, seed: int = 0) -> nn.Sequential:
    """The small CNN for 28×28 digits, with ``norm`` after each convolution.

    Each convolution and the last linear layer draw their initial weights from a seed of
    their own, derived from ``seed``, so that networks with different ``norm`` start from
    the same weights. A convolution followed by a normalization layer has no bias: the
    layer subtracts a mean and adds its own shift ``beta``, which makes a bias in front of
    it useless (chapter "Scale and shift"); without normalization it keeps its bias.

    Args:
        norm: one of :data:`NORMS`. Default: ``"batch"``
        seed: seeds the weights' initialization. Default: 0

    Raises:
        ValueError: for a ``norm`` not in :data:`NORMS`.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    bias = norm == "none"
    layers: list[nn.Module] = [nn.Unflatten(1, (1, 28, 28))]
    inputs = 1
    for k, channels in enumerate(CHANNELS):
        torch.manual_seed(1000 * seed + k)  # this layer's own seed
        conv = nn.Conv2d(inputs, channels, 3, padding=1, bias=bias)
        layers += [conv, norm_layer(norm, channels), nn.ReLU(), nn.MaxPool2d(2)]
        inputs = channels
    torch.manual_seed(1000 * seed + len(CHANNELS))
    layers += [nn.Flatten(), nn.Linear(inputs * 7 * 7, 10)]
    return nn.Sequential(*layers)

