"""Space → **norm**: the unified Π × Φ × Ψ normalization layer, its config and the conv it pairs with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .config import NormConfig, as_config, parse_spec
from .conv import ScaledStdConv2d, WeightNormConv2d, build_conv
from .factory import norm_layer
from .layer import UnifiedNorm
from .norm_act import UnifiedNormAct, norm_act_layer
from .presets import PRESETS, Preset
from .slots import TLU, ScaledReLU, build_norm_act

Spec = str | Mapping[str, Any] | NormConfig


def build_norm(
    spec: Spec,
    num_channels: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    compile: bool = False,
) -> UnifiedNorm:
    """The normalization layer for ``spec`` (``"gn:groups=8"``, an options dict or a :class:`NormConfig`).

    Input and output are (N, num_channels, *spatial) (layout ``tokens``: (N, *tokens, num_channels)).
    ``compile=True`` runs its functional core through ``torch.compile`` (eager is the exact reference).
    Raises ``ValueError`` for an invalid spec or channel count.
    """
    return UnifiedNorm(as_config(spec), num_channels, device=device, dtype=dtype, compile=compile)


__all__ = [
    "PRESETS",
    "TLU",
    "NormConfig",
    "Preset",
    "ScaledReLU",
    "ScaledStdConv2d",
    "Spec",
    "UnifiedNorm",
    "UnifiedNormAct",
    "WeightNormConv2d",
    "as_config",
    "build_conv",
    "build_norm",
    "build_norm_act",
    "norm_act_layer",
    "norm_layer",
    "parse_spec",
]
