"""Weight-side normalization: convs whose weight is reparametrized before every forward.

Both follow the Beyond-BatchNorm code (and timm's ``ScaledStdConv2d`` for SWS). W is the raw weight of
shape (C_out, C_in/groups, kh, kw), g a per-filter gain initialised to 1, fan_in = C_in/groups · kh · kw:

- ``WeightNormConv2d``:  Ŵ = g · W / (‖W‖ + eps),                 ‖·‖ over each filter.
- ``ScaledStdConv2d``:   Ŵ = γ · g · (W − mean) / ((std + eps) · sqrt(fan_in)),  std biased, per filter,
  γ = sqrt(2π / (π − 1)) ≈ 1.7139, the gain that keeps ReLU activations at unit variance (NF-ResNets).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import NormConfig

RELU_GAIN = math.sqrt(2 * math.pi / (math.pi - 1))
"""√(2π/(π−1)): the NF-ResNet gain for ReLU, also the scale of the paper's WN activation."""
CONV_EPS = 1e-5
"""The convs' default eps (``build_conv`` passes the config's; an exported file sets its config's)."""


class _ReparametrizedConv2d(nn.Conv2d):
    """Conv2d whose forward uses ``effective_weight()`` instead of ``weight``: takes nn.Conv2d's
    arguments (zero padding only), plus ``eps``; ``gain`` (C_out, 1, 1, 1) is a per-filter
    gain, init 1."""

    def __init__(self, *args: Any, eps: float = CONV_EPS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(
                f"padding_mode={self.padding_mode!r}: only 'zeros' is supported"
            )
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def effective_weight(self) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        weight = self.effective_weight()
        return F.conv2d(
            x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class WeightNormConv2d(_ReparametrizedConv2d):
    """Conv2d with Ŵ = g · W / (‖W‖ + eps) per output filter (Salimans & Kingma 2016; g init 1)."""

    def effective_weight(self) -> Tensor:
        norm = torch.linalg.vector_norm(self.weight, dim=(1, 2, 3), keepdim=True)
        return self.gain * self.weight / (norm + self.eps)


class ScaledStdConv2d(_ReparametrizedConv2d):
    """Conv2d with Scaled Weight Standardization (Brock et al. 2021; per-filter biased std, eps on std)."""

    def effective_weight(self) -> Tensor:
        fan_in = self.weight[0].numel()
        std, mean = torch.std_mean(
            self.weight, dim=(1, 2, 3), correction=0, keepdim=True
        )
        scale = RELU_GAIN / math.sqrt(fan_in)
        return scale * self.gain * (self.weight - mean) / (std + self.eps)


_CONV_CLASSES: dict[str, type[nn.Conv2d]] = {
    "none": nn.Conv2d,
    "weight_norm": WeightNormConv2d,
    "scaled_ws": ScaledStdConv2d,
}


def build_conv(
    config: NormConfig,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | None = None,
    bias: bool | None = None,
) -> nn.Conv2d:
    """The conv that precedes a norm of this config. Kaiming-normal init (fan_in, ReLU), bias zero.

    ``padding`` defaults to ``kernel_size // 2``; ``bias`` defaults to on for weight-based schemes only
    (as in the paper: activation norms make a conv bias redundant).
    """
    cls = _CONV_CLASSES[config.weight]
    if bias is None:
        bias = config.weight != "none"
    kwargs = {"eps": config.eps} if cls is not nn.Conv2d else {}
    conv = cls(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2 if padding is None else padding,
        bias=bias,
        **kwargs,
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


__all__ = ["CONV_EPS", "RELU_GAIN", "ScaledStdConv2d", "WeightNormConv2d", "build_conv"]
