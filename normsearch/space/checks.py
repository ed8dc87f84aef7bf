"""What each option of a space file may take: NormConfig's own rules (the ``allowed`` metadata of its fields,
:class:`~normsearch.norm.config.Allowed`), and the preset names, so each rule is written once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..norm import PRESETS
from ..norm.config import ALLOWED, Allowed
from ..sources import NetworkOptions

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


@dataclass(frozen=True)
class SectionRules:
    """What the options of one section of a space file may take: ``section`` (``space`` or ``network``),
    ``checks`` (option → check(value): None if allowed, else what is allowed), ``range_kinds`` (the options
    that take a low/high range: ``int`` or ``float``) and ``unknown(option)``: why an option is not one."""

    section: str
    checks: Mapping[str, Callable[[Any], str | None]]
    range_kinds: Mapping[str, str]
    unknown: Callable[[str], str]


LAYER_RULES = SectionRules(
    "space", OPTION_CHECKS, RANGE_KINDS, lambda option: f"unknown option; allowed: {', '.join(OPTION_CHECKS)}"
)
"""The ``space:`` section: the layer's options (NormConfig's and ``preset``)."""


def network_rules(networks: Sequence[NetworkOptions]) -> SectionRules:
    """The ``network:`` section: the options every network of ``networks`` takes (the probed and the trained
    one), each value allowed by all of them; an option named like a layer option is refused (one name, one
    option, in conditions and Optuna parameters)."""

    def unknown(option: str) -> str:
        if option in OPTION_CHECKS:
            return (
                f"{option} is a layer option (the space section's): "
                "a network option of that name cannot be searched"
            )
        missing = next(n for n in networks if n.get(option) is None)
        return missing.unknown(option)

    names = [o.name for o in networks[0].options if all(n.get(o.name) for n in networks[1:])]
    names = [name for name in names if name not in OPTION_CHECKS]

    def check(name: str, value: Any) -> str | None:
        return next((p for p in (n.get(name).problem(value) for n in networks) if p is not None), None)

    kinds = {
        name: kind.__name__
        for name in names
        if (kind := networks[0].get(name).kind) in (int, float) and not networks[0].get(name).choices
    }
    return SectionRules("network", {name: partial(check, name) for name in names}, kinds, unknown)


__all__ = [
    "ENTRY_KEYS",
    "LAYER_RULES",
    "OPTION_CHECKS",
    "OPTION_RULES",
    "RANGE_KINDS",
    "SectionRules",
    "network_rules",
]
