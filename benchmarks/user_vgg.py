"""A user's own network for benchmarks/regret.py (``--model benchmarks/user_vgg.py:vgg``): a small VGG-style
stack without skip connections, conv 3×3 → candidate norm → ReLU, widths 16, 32↓, 32, 64↓, then a global
average pool and a linear head. Input (B, in_channels, R, R), output (B, num_classes) logits."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

WIDTHS = ((16, 1), (32, 2), (32, 1), (64, 2))
"""(channels, stride) of each conv."""


def vgg(norm_layer: Callable[[int], nn.Module], num_classes: int, in_channels: int = 3) -> nn.Module:
    layers: list[nn.Module] = []
    channels = in_channels
    for width, stride in WIDTHS:
        layers += [nn.Conv2d(channels, width, 3, stride, 1, bias=False), norm_layer(width), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
