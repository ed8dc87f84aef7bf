"""Validated settings dataclasses: one generic checker for every section of a space file and every CLI.

A settings class is a frozen dataclass whose fields are int, float, bool, str, ``X | None`` or a non-empty
list of numbers (``tuple[float, ...]``, stored as a tuple) and may carry ``metadata`` with ``choices``
(allowed values), ``min`` / ``max`` (inclusive bounds, for a list: of each element), ``check`` (a function that
raises ``ValueError`` for a value it refuses, e.g. a model name that does not resolve) and ``help``. Numbers
must be finite everywhere (NaN and ±inf are refused: they would poison every score or result). Call
:func:`check_fields` from ``__post_init__``; build from untrusted mappings with :func:`from_mapping`, which
names the offending key path in its error.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """An invalid setting. ``path`` is the key path (``probe.depth``), ``message`` what is allowed."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def _allowed_types(cls: type, field: dataclasses.Field) -> tuple[tuple[type, ...], bool]:
    hint = typing.get_type_hints(cls)[field.name]
    args = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    optional = type(None) in args
    return tuple(a for a in args if a is not type(None)), optional


def _describe(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _check_list(field: dataclasses.Field, value: Any, path: str) -> tuple[float, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or not value:
        raise SettingsError(path, f"must be a non-empty list of numbers, got {value!r}")
    return tuple(
        _check_scalar((float,), False, field.metadata, item, f"{path}[{i}]") for i, item in enumerate(value)
    )


def check_value(cls: type, field: dataclasses.Field, value: Any, path: str) -> Any:
    """Check one value against the field's type and metadata; returns it coerced (int → float where needed)."""
    if typing.get_origin(typing.get_type_hints(cls)[field.name]) is tuple:
        return _check_list(field, value, path)
    kinds, optional = _allowed_types(cls, field)
    return _check_scalar(kinds, optional, field.metadata, value, path)


def _check_scalar(
    kinds: tuple[type, ...], optional: bool, meta: Mapping[str, Any], value: Any, path: str
) -> Any:
    if value is None:
        if optional:
            return None
        raise SettingsError(path, f"must be {_describe(kinds)}, got null")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise SettingsError(path, f"must be {_describe(kinds)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(path, f"must be a finite number, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise SettingsError(path, f"must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
    if "min" in meta and value < meta["min"]:
        raise SettingsError(path, f"must be >= {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise SettingsError(path, f"must be <= {meta['max']}, got {value!r}")
    if "check" in meta:
        try:
            meta["check"](value)
        except ValueError as err:
            raise SettingsError(path, str(err)) from None
    return value


def check_fields(obj: Any, prefix: str = "") -> None:
    """Validate (and coerce in place) every field of a frozen settings dataclass instance."""
    cls = type(obj)
    for field in dataclasses.fields(cls):
        path = f"{prefix}.{field.name}" if prefix else field.name
        object.__setattr__(obj, field.name, check_value(cls, field, getattr(obj, field.name), path))


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build a settings object from a mapping, refusing unknown keys (with the allowed ones listed)."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise SettingsError(prefix, f"must be a mapping of settings, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            path = f"{prefix}.{key}" if prefix else str(key)
            raise SettingsError(path, f"unknown setting; allowed: {', '.join(names)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: check_value(cls, fields[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**values)
    except SettingsError as err:
        if prefix and not err.path.startswith(prefix):
            raise SettingsError(f"{prefix}.{err.path}" if err.path else prefix, err.message) from None
        raise


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for each field: for docs and ``--help`` text."""
    out = []
    for field in dataclasses.fields(cls):
        kinds, optional = _allowed_types(cls, field)
        kind = (
            "|".join(map(str, field.metadata["choices"])) if "choices" in field.metadata else _describe(kinds)
        )
        out.append(
            (
                field.name,
                kind + (" or null" if optional else ""),
                field.default,
                field.metadata.get("help", ""),
            )
        )
    return out
