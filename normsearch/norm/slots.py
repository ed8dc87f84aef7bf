"""Where a config's pieces sit in a conv → norm → activation block, as the Beyond-BatchNorm networks place them.

``build_norm_act(config, C)`` returns the (norm slot, activation slot) pair:

- plain activation norms: (UnifiedNorm, ReLU);
- TLU configs (FRN): (UnifiedNorm without TLU, TLU): the TLU takes the ReLU's place, so in a residual block
  it acts after the sum;
- EvoNorm configs: (Identity, UnifiedNorm): the layer *is* the activation, applied after the residual sum;
- weight-based configs without activation statistics: (affine or Identity, ScaledReLU) for weight norm
  (Arpit et al. 2016), ReLU for scaled WS.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import NormConfig
from .layer import UnifiedNorm


class TLU(nn.Module):
    """Thresholded linear unit: y = max(x, τ), τ per channel, init 0 (= ReLU at init). Input (N, C, *S)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.tau = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        return torch.maximum(x, self.tau.view(1, -1, *([1] * (x.dim() - 2))))


class ScaledReLU(nn.Module):
    """√(2π/(π−1)) · (ReLU(x) − 1/√(2π)): zero mean, unit variance for x ~ N(0, 1) (Arpit et al. 2016)."""

    SCALE = math.sqrt(2 * math.pi / (math.pi - 1))
    SHIFT = 1 / math.sqrt(2 * math.pi)

    def forward(self, x: Tensor) -> Tensor:
        return self.SCALE * (torch.relu(x) - self.SHIFT)


def _is_identity(config: NormConfig) -> bool:
    return (
        not config.normalizes_activations
        and config.affine == "none"
        and config.act == "none"
    )


def build_norm_act(
    config: NormConfig, num_channels: int
) -> tuple[nn.Module, nn.Module]:
    """(norm slot, activation slot) modules for a block with ``num_channels`` channels."""
    if config.act in ("evo_s0", "evo_b0"):
        return nn.Identity(), UnifiedNorm(config, num_channels)
    if config.act == "tlu":
        return UnifiedNorm(config.replace(act="none"), num_channels), TLU(num_channels)
    norm = nn.Identity() if _is_identity(config) else UnifiedNorm(config, num_channels)
    if config.weight == "weight_norm" and not config.normalizes_activations:
        return norm, ScaledReLU()
    return norm, nn.ReLU(inplace=False)
