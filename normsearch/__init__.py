"""normsearch: search the design space of normalization layers with init-time probes.

Public API: the pipeline (:func:`run` → :class:`Study`: ``leaderboard()``, ``winner``, ``export()``; see
:mod:`normsearch.pipeline`) and the layer: :func:`build_norm`, :class:`NormConfig`, :func:`parse_spec`,
:func:`build_conv`, :func:`norm_layer` (the factory model builders take), ``PRESETS``.
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
    "Study",
    "__version__",
    "build_conv",
    "build_norm",
    "build_norm_act",
    "norm_layer",
    "parse_spec",
    "run",
]


def __getattr__(name: str) -> object:
    """``run`` and ``Study`` load the pipeline (Optuna, the CLI's tables) on first use, so importing the
    layers alone stays light."""
    if name in ("run", "Study"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'normsearch' has no attribute {name!r}")
