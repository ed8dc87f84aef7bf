"""Space → **norm**: the unified Π × Φ × Ψ normalization layer, its config and the conv it pairs with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import NormConfig, as_config, parse_spec
from .conv import ScaledStdConv2d, WeightNormConv2d, build_conv
from .layer import UnifiedNorm
from .presets import PRESETS, Preset
from .slots import TLU, ScaledReLU, build_norm_act

Spec = str | Mapping[str, Any] | NormConfig


def build_norm(spec: Spec, num_channels: int) -> UnifiedNorm:
    """The normalization layer for ``spec`` (``"gn:groups=8"``, an options dict or a :class:`NormConfig`).

    Input and output are (N, num_channels, *spatial). Raises ``ValueError`` for an invalid spec or
    channel count.
    """
    return UnifiedNorm(as_config(spec), num_channels)


__all__ = [
    "PRESETS",
    "TLU",
    "NormConfig",
    "Preset",
    "ScaledReLU",
    "ScaledStdConv2d",
    "Spec",
    "UnifiedNorm",
    "WeightNormConv2d",
    "as_config",
    "build_conv",
    "build_norm",
    "build_norm_act",
    "parse_spec",
]
