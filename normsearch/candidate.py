"""A search candidate: a normalizer config and the network options it is built with, and its string.

Torch-free, so that commands which only read stored candidates (the leaderboard, ``runs``) start fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .norm.config import NormConfig, Spec, as_config


def as_text(value: Any) -> str:
    """A network option's value as written in a config string and in YAML: ``true``, ``0.001``, ``post``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def read_value(text: str) -> Any:
    """A config-string value: true/false, an int, a float, else the stripped string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


NETWORK_SEPARATOR = "|"
"""Separates the layer spec from the network options in a candidate string (never in a layer spec)."""


@dataclass(frozen=True)
class CandidateConfig:
    """What a search trial evaluates: the normalizer ``layer`` and the ``network`` options it is built with
    ((name, value) pairs sorted by name; empty: the network's defaults).

    Its string (:meth:`spec`) is the layer's spec alone without network options, else
    ``LAYER_SPEC|name=value,...`` with values as YAML writes them (``pn|placement=post,qk_norm=true``);
    :meth:`parse` reads it back to an equal candidate."""

    layer: NormConfig
    network: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, layer: Spec, network: Mapping[str, Any] | None = None) -> CandidateConfig:
        """A candidate of a layer spec (string, mapping or config) and network options (any order)."""
        return cls(as_config(layer), tuple(sorted((network or {}).items())))

    @classmethod
    def parse(cls, text: str) -> CandidateConfig:
        """The candidate of a string of :meth:`spec` (a plain layer spec has no network options);
        ``ValueError`` naming the string for a malformed one."""
        layer, options = split_candidate(text)
        return cls.of(layer, options)

    @property
    def options(self) -> dict[str, Any]:
        """The network options as a mapping (the ``network`` object of leaderboard rows)."""
        return dict(self.network)

    def spec(self) -> str:
        """The canonical string (see the class docstring)."""
        if not self.network:
            return self.layer.spec()
        options = ",".join(f"{key}={as_text(value)}" for key, value in self.network)
        return f"{self.layer.spec()}{NETWORK_SEPARATOR}{options}"


def split_candidate(text: str) -> tuple[str, dict[str, Any]]:
    """(layer spec text, network options) of a candidate string, the layer spec left unparsed (a failed
    trial's config may not be a valid one); ``ValueError`` for a malformed options part."""
    layer, sep, rest = str(text).partition(NETWORK_SEPARATOR)
    options: dict[str, Any] = {}
    if not sep:
        return layer, options
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier() or key in options or not value:
            raise ValueError(f"candidate {text!r}: network options must be name=value,..., got {item!r}")
        options[key] = read_value(value)
    return layer, options


def as_candidate(spec: Spec | CandidateConfig) -> CandidateConfig:
    """A candidate from a candidate, a candidate string or any layer spec (no network options)."""
    if isinstance(spec, CandidateConfig):
        return spec
    if isinstance(spec, str):
        return CandidateConfig.parse(spec)
    return CandidateConfig.of(spec)


__all__ = ["NETWORK_SEPARATOR", "CandidateConfig", "as_candidate", "as_text", "read_value", "split_candidate"]
