"""normsearch: search the design space of normalization layers with init-time probes.

Public API: :func:`build_norm`, :class:`NormConfig`, :func:`parse_spec`, :func:`build_conv`, :func:`norm_layer`, ``PRESETS``.
"""

from importlib.metadata import PackageNotFoundError, version

from .norm import PRESETS, NormConfig, build_conv, build_norm, build_norm_act, norm_layer, parse_spec

try:
    __version__ = version("normsearch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "PRESETS",
    "NormConfig",
    "__version__",
    "build_conv",
    "build_norm",
    "build_norm_act",
    "norm_layer",
    "parse_spec",
]
