"""normsearch: search the design space of normalization layers with init-time probes.

Public API: the pipeline (:func:`run` → :class:`Study`: ``leaderboard()``, ``winner``, ``export()``; see
:mod:`normsearch.pipeline`; ``run`` shows ``normsearch run``'s progress on stderr) and the layer: :func:`build_norm`, :class:`NormConfig`, :func:`parse_spec`,
:func:`build_conv`, :func:`norm_layer` (the factory model builders take; timm's convnets:
:func:`norm_act_layer`), ``PRESETS``.
They are imported on first use (PEP 562), so that ``import normsearch`` does not load torch: the console
script (:mod:`normsearch.console`) can then catch a Ctrl-C during its own start-up.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("normsearch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

_FROM_NORM = (
    "PRESETS",
    "NormConfig",
    "build_conv",
    "build_norm",
    "build_norm_act",
    "norm_act_layer",
    "norm_layer",
    "parse_spec",
)
_FROM_PIPELINE = ("Study",)


def run(space: Any = "groups", *, progress: bool = True, **options: Any) -> Any:
    """:func:`normsearch.pipeline.run` (same arguments, returns its :class:`Study`) with the progress of
    ``normsearch run`` on stderr: the study notes, the search's bar, the confirmation's runs;
    ``progress=False`` prints nothing. The package root composes the two: the pipeline sits below the CLI
    that draws the progress (tests/test_layers.py)."""
    from .pipeline import run as run_pipeline

    if progress:
        from .cli.app import stderr
        from .cli.search import _Terminal

        options.setdefault("reporter", _Terminal)
        options.setdefault("console", stderr)
    return run_pipeline(space, **options)


def __getattr__(name: str) -> Any:
    if name in _FROM_NORM:
        return getattr(import_module(".norm", __name__), name)
    if name in _FROM_PIPELINE:  # Optuna and the CLI's tables load only with the pipeline
        return getattr(import_module(".pipeline", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "NormConfig",
    "Study",
    "__version__",
    "build_conv",
    "build_norm",
    "build_norm_act",
    "norm_act_layer",
    "norm_layer",
    "parse_spec",
    "run",
]
