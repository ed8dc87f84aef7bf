"""What each option of a space file may take: NormConfig's own rules (the ``allowed`` metadata of its fields,
:class:`~normsearch.norm.config.Allowed`), and the preset names, so each rule is written once."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ..norm import PRESETS
from ..norm.config import ALLOWED, Allowed

OPTION_RULES: dict[str, Allowed] = {"preset": Allowed(choices=tuple(PRESETS)), **ALLOWED}
"""Option name (NormConfig's options and ``preset``) → what it may take."""
OPTION_CHECKS: dict[str, Callable[[Any], str | None]] = {
    name: partial(rule.problem, none_ok=rule.null is not None) for name, rule in OPTION_RULES.items()
}
"""Option name → check(value) returning None if allowed, else what is allowed. Null is allowed where the rule
says what it stands for (``running``, ``momentum``: their defaults)."""
RANGE_KINDS = {name: rule.kind.__name__ for name, rule in OPTION_RULES.items() if rule.kind in (int, float)}
"""Options that may take a low/high range (the numeric ones), and the kind of range: ``int`` or ``float``."""
ENTRY_KEYS = ("value", "choices", "low", "high", "step", "log", "when")

__all__ = ["ENTRY_KEYS", "OPTION_CHECKS", "OPTION_RULES", "RANGE_KINDS"]
