"""The conv wrapper of weight-based schemes: :mod:`normsearch.norm.conv`'s classes, copied.

Same class names, parameter names (``weight``, ``bias``, ``gain``) and formulas, so state dicts move between
``build_conv`` and the exported class both ways. Only ``CONV_EPS``, the default eps, is the config's.
"""

from __future__ import annotations

from ..norm import NormConfig
from ..norm import conv as norm_conv
from .core import core_source

CONV_CLASSES = {"weight_norm": norm_conv.WeightNormConv2d, "scaled_ws": norm_conv.ScaledStdConv2d}
CONV_CLASS_NAMES = {scheme: cls.__name__ for scheme, cls in CONV_CLASSES.items()}


def conv_blocks(cfg: NormConfig) -> list[str]:
    """Module-level definitions (source strings) of the conv wrapper for ``cfg.weight`` (none for
    ``weight = none``), with ``CONV_EPS`` set to the config's eps."""
    if cfg.weight == "none":
        return []
    eps = [
        f"CONV_EPS = {cfg.eps!r}",
        '"""The convs\' default eps: the config\'s."""',
    ]
    blocks = [block for block in core_source([CONV_CLASSES[cfg.weight]]) if not block.startswith("CONV_EPS")]
    return ["\n".join(eps), *blocks]
