"""Command-line interface. Each module registers its commands on :data:`app`."""

from . import confirm  # noqa: F401
from . import export  # noqa: F401
from . import presets  # noqa: F401  (registers commands)
from . import probe  # noqa: F401
from . import search  # noqa: F401
from .app import app

__all__ = ["app"]
