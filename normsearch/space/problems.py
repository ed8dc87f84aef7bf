"""How a space file's problems are reported: every problem found, one line each, ``FILE: key.path: what is
allowed``."""

from __future__ import annotations

from typing import Any


class SpaceError(ValueError):
    """Problems in a space file: one line per problem, each ``FILE: key.path: what is allowed``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Problems:
    """Collects one message per problem, each prefixed with the file label."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{self.label}: {path}: {message}" if path else f"{self.label}: {message}")


def kind(value: Any) -> str:
    """What a YAML value is, for messages: ``a mapping``, ``a list``, …, else its repr."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), repr(value)
    )


__all__ = ["Problems", "SpaceError", "kind"]
