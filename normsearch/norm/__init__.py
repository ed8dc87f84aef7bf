"""Space → **norm**: the unified Π × Φ × Ψ normalization layer, its config and the conv it pairs with.

The config (:mod:`.config`: ``NormConfig``, ``parse_spec``, ``as_config``) and the presets load without
torch, so that commands which only read configs (``normsearch presets``, the leaderboard) start fast; the
layers, convs and factories are imported on first use (PEP 562).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .config import NormConfig, Spec, as_config, parse_spec
from .presets import PRESETS, Preset

if TYPE_CHECKING:
    import torch

    from .conv import ScaledStdConv2d, WeightNormConv2d, build_conv
    from .factory import norm_layer
    from .layer import UnifiedNorm
    from .norm_act import UnifiedNormAct, norm_act_layer
    from .slots import TLU, ScaledReLU, build_norm_act

_LAZY = {
    "ScaledStdConv2d": "conv",
    "WeightNormConv2d": "conv",
    "build_conv": "conv",
    "norm_layer": "factory",
    "UnifiedNorm": "layer",
    "UnifiedNormAct": "norm_act",
    "norm_act_layer": "norm_act",
    "TLU": "slots",
    "ScaledReLU": "slots",
    "build_norm_act": "slots",
}
"""Names that need torch → the submodule defining them."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from .layer import UnifiedNorm

    return UnifiedNorm(
        as_config(spec), num_channels, device=device, dtype=dtype, compile=compile
    )


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
