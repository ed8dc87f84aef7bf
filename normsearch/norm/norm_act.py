"""timm's norm + activation contract for the candidate's layer: :class:`UnifiedNormAct`, built through
:func:`norm_act_layer` (the ``norm_layer`` to give ``timm.create_model``).

timm's convnets (EfficientNet, MobileNet, RegNet, ResNet-D, ...) do not call ``norm_layer(C)``: they turn it
into a norm+act layer (``timm.layers.get_norm_act_layer(norm_layer, act_layer)``) and call that with
``apply_act``, ``act_layer``, ``act_kwargs``, ``inplace`` and ``drop_layer``, so that the activation after
each norm belongs to the layer (``timm.layers.BatchNormAct2d``). A layer class gets ``act_layer`` bound
only when timm knows it as a norm+act type; :func:`norm_act_layer` registers :class:`UnifiedNormAct` in
timm's two sets of those types the first time it is used (timm has no public registry).

For an input x of shape (N, C, *S): ``y = act(drop(norm(x)))``, with ``norm`` the config's
:class:`~normsearch.norm.layer.UnifiedNorm` (its parameters and buffers keep their names, as
``BatchNormAct2d`` keeps ``nn.BatchNorm2d``'s), ``drop = drop_layer()`` (identity by default) and
``act = act_layer(**act_kwargs, inplace=inplace)`` when ``apply_act`` and ``act_layer`` is given (timm's
``create_act_layer``: a class, or a timm name such as ``"swish"``), else identity. Called as a plain norm layer
(``norm_layer(C)``, as ViTs do), it is the config's layer alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .config import NormConfig, as_config
from .factory import with_keywords
from .layer import UnifiedNorm


def _activation(
    act_layer: Any, act_kwargs: dict[str, Any] | None, inplace: bool, apply_act: bool
) -> nn.Module:
    """timm's ``_create_act``: ``act_layer`` built with ``act_kwargs`` (``inplace`` by default), or identity."""
    if not apply_act or act_layer is None:
        return nn.Identity()
    from timm.layers import (
        create_act_layer,
    )  # the names and classes are timm's (its extra is installed)

    act = create_act_layer(act_layer, **{"inplace": inplace, **(act_kwargs or {})})
    return nn.Identity() if act is None else act


class UnifiedNormAct(UnifiedNorm):
    """The config's layer followed by timm's dropout and activation slots (see the module docstring)."""

    def __init__(
        self,
        num_features: int,
        *,
        config: NormConfig,
        eps: float | None = None,
        momentum: float | None = None,
        affine: bool | None = None,
        apply_act: bool = True,
        act_layer: Any = None,
        act_kwargs: dict[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: Callable[[], nn.Module] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        config = with_keywords(config, eps=eps, affine=affine, momentum=momentum)
        super().__init__(config, num_features, device=device, dtype=dtype)
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        self.act = _activation(act_layer, act_kwargs, inplace, apply_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))


@functools.cache
def _register_with_timm() -> None:
    """Make timm bind ``act_layer`` for :class:`UnifiedNormAct`, as for its own ``BatchNormAct2d``."""
    try:
        from timm.layers import create_norm_act
    except ImportError:  # no timm: nothing to register with
        return
    create_norm_act._NORM_ACT_TYPES.add(UnifiedNormAct)
    create_norm_act._NORM_ACT_REQUIRES_ARG.add(UnifiedNormAct)


def norm_act_layer(spec: str | NormConfig | dict) -> Callable[..., UnifiedNormAct]:
    """The ``norm_layer`` for timm models: ``functools.partial(UnifiedNormAct, config=...)``, which timm's
    ``get_norm_act_layer`` re-binds with the model's activation, e.g.
    ``timm.create_model("efficientnet_b0", norm_layer=norm_act_layer("gn:groups=8"))``."""
    _register_with_timm()
    return functools.partial(UnifiedNormAct, config=as_config(spec))


__all__ = ["UnifiedNormAct", "norm_act_layer"]
