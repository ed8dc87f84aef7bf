"""Command-line interface. Each command module registers its commands on :data:`app` when imported."""

from . import confirm, export, presets, probe, report, search  # noqa: F401  (register commands)
from .app import app

__all__ = ["app"]
