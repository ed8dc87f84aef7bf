"""Class names for exported layers: derived from the config, or given by the user and checked."""

from __future__ import annotations

import builtins
import keyword
from dataclasses import fields

from ..norm import PRESETS, NormConfig, as_config
from .core import CORE_NAMES, IMPORTED_NAMES

PRESET_CLASS_NAMES: dict[str, str] = {
    "bn": "BatchNorm",
    "ln": "LayerNorm",
    "in": "InstanceNorm",
    "gn": "GroupNorm",
    "rms": "RMSNorm",
    "pn": "PositionalNorm",
    "bgn": "BatchGroupNorm",
    "frn": "FRN",
    "evonorm_s0": "EvoNormS0",
    "evonorm_b0": "EvoNormB0",
    "wn": "NoNorm",
    "sws": "NoNorm",
    "dyt": "DyT",
    "derf": "Derf",
    "none": "NoNorm",
}
"""Base name per preset; presets that differ only in their weight scheme share the activation-side name."""

FALLBACK_CLASS_NAME = "NormLayer"

RESERVED_NAMES = IMPORTED_NAMES | CORE_NAMES
"""Module-level names an exported file may define or import: a class must not shadow them."""

_TUNABLE = ("eps", "momentum", "groups", "group_size", "weight", "layout")
"""Options that do not change a layer's kind: constructor arguments (or the conv wrapper's job)."""


def _kind(cfg: NormConfig) -> tuple:
    return tuple(getattr(cfg, f.name) for f in fields(cfg) if f.name not in _TUNABLE)


def matching_preset(cfg: NormConfig) -> str | None:
    """The preset ``cfg`` equals up to eps, momentum, the group count (and, failing an exact match, the
    weight scheme), or ``None``."""
    kind = _kind(cfg)
    same_kind = [name for name in PRESETS if _kind(as_config(PRESETS[name].options)) == kind]
    exact = [name for name in same_kind if as_config(PRESETS[name].options).weight == cfg.weight]
    return (exact or same_kind or [None])[0]


def default_class_name(cfg: NormConfig) -> str:
    """``GroupNorm8``, ``GroupNormSize4``, ``FRN``, ``BatchNorm``…, or ``NormLayer`` for configs no preset names.

    A preset's name is used when the config equals it up to eps, momentum, the group count and the
    weight scheme; grouped partitions append G (``8``) or the group size (``Size4``).
    """
    preset = matching_preset(cfg)
    if preset is None:
        return FALLBACK_CLASS_NAME
    base = PRESET_CLASS_NAMES[preset]
    if cfg.groups is not None:
        return f"{base}G{cfg.groups}" if base[-1].isdigit() else f"{base}{cfg.groups}"
    if cfg.group_size is not None:
        return f"{base}Size{cfg.group_size}"
    return base


def check_class_name(name: object) -> str:
    """``name`` if it can name the exported class, else ``ValueError`` saying why."""
    if not isinstance(name, str) or not name.isascii() or not name.isidentifier():
        raise ValueError(
            f"class name {name!r} is not a Python identifier (ASCII letters, digits and '_', "
            "not starting with a digit)"
        )
    if keyword.iskeyword(name):
        raise ValueError(f"class name {name!r} is a Python keyword")
    if hasattr(builtins, name):
        raise ValueError(
            f"class name {name!r} would shadow the Python builtin {name!r}, which the module may use"
        )
    if name in RESERVED_NAMES:
        raise ValueError(
            f"class name {name!r} is taken by the exported module; reserved: {', '.join(sorted(RESERVED_NAMES))}"
        )
    return name
