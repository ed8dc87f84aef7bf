"""The ``norm_layer`` argument model builders take (torchvision, timm, the user's own): one callable per config.

``norm_layer(spec)`` returns ``factory`` with ``factory(num_channels, **keywords) -> UnifiedNorm``: channels
first, as ``nn.BatchNorm2d(num_features)`` and ``nn.LayerNorm(dim)`` are called. Keywords a builder may pass:

- ``device``, ``dtype``: where the parameters and buffers live (timm passes both to every layer);
- ``eps``: replaces the config's eps (the architecture's choice, e.g. timm's ViT LayerNorm eps=1e-6);
- ``affine``: ``False`` drops γ and β (config ``affine=none``); ``True`` keeps the config's;
- ``momentum``: replaces the config's for layers with running estimates; ignored by the others, which have
  nothing it could act on.

Any other keyword raises ``TypeError`` naming the accepted ones (a silently ignored option would make the
built model differ from what its builder asked for); timm's norm+act keywords (``inplace``, ``apply_act``,
``act_layer``, ``act_kwargs``, ``drop_layer``) name :func:`~normsearch.norm.norm_act.norm_act_layer`, the
factory for those models. The factory is a ``functools.partial`` with the config bound by keyword, the
form timm's ``get_norm_layer`` re-binds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .config import NormConfig, as_config
from .layer import UnifiedNorm

ACCEPTED_KEYWORDS = ("device", "dtype", "eps", "affine", "momentum")
TIMM_NORM_ACT_KEYWORDS = (
    "inplace",
    "apply_act",
    "act_layer",
    "act_kwargs",
    "drop_layer",
)
"""What timm passes to a norm+act layer (``timm.layers.BatchNormAct2d``'s signature)."""


def with_keywords(
    config: NormConfig,
    *,
    eps: float | None,
    affine: bool | None,
    momentum: float | None,
) -> NormConfig:
    """``config`` with a builder's ``eps``, ``affine`` and ``momentum`` applied (module docstring)."""
    changes: dict[str, Any] = {}
    if eps is not None and config.normalizes_activations:
        changes["eps"] = eps
    if affine is False:
        changes["affine"] = "none"
    if momentum is not None and config.running:
        changes["momentum"] = momentum
    return config.replace(**changes) if changes else config


def make_norm_layer(
    num_channels: int,
    *,
    config: NormConfig,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    eps: float | None = None,
    affine: bool | None = None,
    momentum: float | None = None,
    **unknown: Any,
) -> UnifiedNorm:
    """``config``'s layer for ``num_channels`` channels, with the keywords of the module docstring applied."""
    if unknown:
        timm = set(unknown) & set(TIMM_NORM_ACT_KEYWORDS)
        raise TypeError(
            f"norm layer {config.spec()!r} got unexpected keyword(s) {', '.join(sorted(unknown))}; "
            f"accepted: {', '.join(ACCEPTED_KEYWORDS)}"
            + (
                "; timm's norm+act layers take normsearch.norm_act_layer(spec)"
                if timm
                else ""
            )
        )
    config = with_keywords(config, eps=eps, affine=affine, momentum=momentum)
    return UnifiedNorm(config, num_channels, device=device, dtype=dtype)


def norm_layer(spec: str | NormConfig | dict) -> Callable[..., UnifiedNorm]:
    """The factory of ``spec`` for a model builder's ``norm_layer`` argument (see the module docstring),
    e.g. ``torchvision.models.resnet18(norm_layer=norm_layer("gn:groups=8"))``."""
    return functools.partial(make_norm_layer, config=as_config(spec))


__all__ = [
    "ACCEPTED_KEYWORDS",
    "TIMM_NORM_ACT_KEYWORDS",
    "make_norm_layer",
    "norm_layer",
    "with_keywords",
]
