"""The ``space:`` and ``network:`` sections of a space file: each option's entries (fixed values, choices,
ranges, conditions, variants) validated into :class:`~normsearch.space.model.Param` s, every problem reported.
What each option may take comes from the section's :class:`~normsearch.space.checks.SectionRules`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .checks import ENTRY_KEYS, LAYER_RULES, SectionRules
from .model import Param, as_yaml, branch, same
from .problems import Problems, kind

MAX_RANGE_VALUES = 100_000
"""Most values an int range or a float range with a step may hold (each is enumerated for checks and grids)."""


def _parse_when(
    path: str, data: Any, declared: Mapping[str, tuple[Any, ...] | None], problems: Problems
) -> tuple[tuple[str, tuple[Any, ...]], ...] | None:
    """The conditions of one entry; ``declared``: option above → its possible values (None for a range)."""
    path = f"{path}.when"
    if not isinstance(data, Mapping) or not data:
        problems.add(path, "must be a mapping {option: value or [values]} of options declared above")
        return None
    conditions = []
    for key, allowed in data.items():
        where = f"{path}.{key}"
        if key not in declared:
            problems.add(
                where,
                "must name an option declared above it in space or network; declared: "
                f"{', '.join(declared) or 'none'}",
            )
            return None
        possible = declared[key]
        if possible is None:
            problems.add(where, f"{key} is a range: conditions can only test fixed values or choices")
            return None
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if not values:
            problems.add(where, "needs at least one value")
            return None
        for i, value in enumerate(values):
            if not any(same(value, v) for v in possible):
                at = f"{where}[{i}]" if isinstance(allowed, list) else where
                problems.add(
                    at,
                    f"{as_yaml(value)} is not a value of {key}; its values: "
                    f"{', '.join(map(as_yaml, possible))}",
                )
                return None
        conditions.append((key, values))
    return tuple(conditions)


def _check_values(rules: SectionRules, option: str, values: list[Any], path: str, problems: Problems) -> bool:
    check = rules.checks[option]
    ok = True
    for i, value in enumerate(values):
        allowed = check(value)
        if allowed is not None:
            problems.add(path.format(i=i), f"must be {allowed}, got {value!r}")
            ok = False
    return ok


def _parse_range(
    rules: SectionRules, option: str, path: str, entry: Mapping[str, Any], problems: Problems
) -> Param | None:
    kind = rules.range_kinds.get(option)
    if kind is None:
        ranged = ", ".join(rules.range_kinds) or f"numeric options (none in {rules.section})"
        problems.add(path, f"low/high ranges apply only to {ranged}; use choices for {option}")
        return None
    if "low" not in entry or "high" not in entry:
        problems.add(path, "a range needs both low and high")
        return None
    low, high, step, log = entry["low"], entry["high"], entry.get("step"), entry.get("log", False)
    ok = _check_values(rules, option, [low], f"{path}.low", problems) & _check_values(
        rules, option, [high], f"{path}.high", problems
    )
    if not isinstance(log, bool):
        problems.add(f"{path}.log", f"must be true or false, got {log!r}")
        ok = False
    if step is not None:
        positive = isinstance(step, int | float) and not isinstance(step, bool) and step > 0
        if kind == "int" and not (positive and isinstance(step, int)):
            problems.add(f"{path}.step", f"must be a positive integer, got {step!r}")
            ok = False
        elif not positive:
            problems.add(f"{path}.step", f"must be a positive number, got {step!r}")
            ok = False
        elif log is True:
            problems.add(path, "log and step cannot be combined (Optuna samples a log range without a step)")
            ok = False
    if ok and (low is None or high is None):
        problems.add(path, "low and high must be numbers")
        return None
    if ok and low > high:
        problems.add(path, f"low must be <= high, got low={low!r}, high={high!r}")
        ok = False
    if ok and (kind == "int" or step is not None):
        count = math.floor((high - low) / (step or 1) + 1e-9) + 1
        if count > MAX_RANGE_VALUES:
            problems.add(
                path,
                f"holds {count} values; a range may hold at most {MAX_RANGE_VALUES}"
                + (" (use log: true for a float option, or fewer values)" if kind == "float" else ""),
            )
            ok = False
    if not ok:
        return None
    convert = int if kind == "int" else float
    return Param(
        option,
        option,
        kind,
        low=convert(low),
        high=convert(high),
        step=None if step is None else convert(step),
        log=log,
    )


def _parse_entry(
    rules: SectionRules,
    option: str,
    path: str,
    entry: Any,
    declared: Mapping[str, tuple[Any, ...] | None],
    problems: Problems,
) -> Param | None:
    """One entry (a scalar or a mapping) of option ``option``, its errors reported at ``path``."""
    if isinstance(entry, list):
        problems.add(path, "a list of values is not a value: write {choices: [...]} for a categorical choice")
        return None
    if not isinstance(entry, Mapping):
        ok = _check_values(rules, option, [entry], path, problems)
        return Param(option, option, "fixed", (entry,), path=path, section=rules.section) if ok else None
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        problems.add(f"{path}.{unknown[0]}", f"unknown key; allowed: {', '.join(ENTRY_KEYS)}")
        return None
    forms = [k for k in ("value", "choices", "low") if k in entry] or (["low"] if "high" in entry else [])
    if len(forms) != 1:
        problems.add(
            path,
            "needs exactly one of value, choices or low/high"
            + (f"; got {', '.join(forms)}" if forms else ""),
        )
        return None
    if forms[0] != "low" and any(k in entry for k in ("high", "step", "log")):
        problems.add(path, "high/step/log belong to a low/high range")
        return None
    if forms[0] == "value":
        param = (
            Param(option, option, "fixed", (entry["value"],))
            if _check_values(rules, option, [entry["value"]], f"{path}.value", problems)
            else None
        )
    elif forms[0] == "choices":
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            problems.add(f"{path}.choices", f"must be a non-empty list, got {choices!r}")
            return None
        if not _check_values(rules, option, choices, f"{path}.choices[{{i}}]", problems):
            return None
        repeated = [v for i, v in enumerate(choices) if any(same(v, w) for w in choices[:i])]
        if repeated:
            problems.add(f"{path}.choices", f"lists {as_yaml(repeated[0])} twice")
            return None
        param = Param(option, option, "categorical", tuple(choices))
    else:
        param = _parse_range(rules, option, path, entry, problems)
    if param is None:
        return None
    param = dataclasses.replace(param, path=path, section=rules.section)
    if "when" not in entry:
        return param
    when = _parse_when(path, entry["when"], declared, problems)
    return None if when is None else dataclasses.replace(param, when=when, name=f"{branch(when)}.{option}")


def _parse_option(
    rules: SectionRules,
    option: str,
    data: Any,
    declared: Mapping[str, tuple[Any, ...] | None],
    problems: Problems,
) -> list[Param]:
    """The entries of one option: a single entry, or a list of variants (first applicable wins)."""
    path = f"{rules.section}.{option}"
    if option not in rules.checks:
        problems.add(path, rules.unknown(option))
        return []
    if option in declared:
        problems.add(path, f"{option} is declared in both space and network: an option is searched once")
        return []
    if not (isinstance(data, list) and data and all(isinstance(v, Mapping) for v in data)):
        param = _parse_entry(rules, option, path, data, declared, problems)
        return [] if param is None else [param]
    params = []
    for i, entry in enumerate(data):
        if "when" not in entry and i < len(data) - 1:
            problems.add(f"{path}[{i}]", "only the last variant may omit when (it is the otherwise case)")
            return []
        param = _parse_entry(rules, option, f"{path}[{i}]", entry, declared, problems)
        if param is None:
            return []
        earlier = [j for j, p in enumerate(params) if p.when == param.when]
        if earlier:
            problems.add(
                f"{path}[{i}].when", f"same condition as {path}[{earlier[0]}]: this variant never applies"
            )
            return []
        params.append(param)
    return params


def parse_space_section(
    data: Any,
    problems: Problems,
    rules: SectionRules = LAYER_RULES,
    declared: dict[str, tuple[Any, ...] | None] | None = None,
) -> tuple[Param, ...]:
    """The entries of section ``data`` (``space:`` by default; ``network:`` with its rules), in declaration
    order (problems added to ``problems``). ``declared``: option → possible values (None for a range) of the
    options declared so far, in this and earlier sections (conditions may name them); updated here."""
    declared = {} if declared is None else declared
    if data is None and rules.section == "space":
        problems.add(
            "space", "missing: the options to search, e.g. space: {partition: {choices: [batch, layer]}}"
        )
        return ()
    if not isinstance(data, Mapping) or not data:
        problems.add(
            rules.section,
            f"must be a non-empty mapping of option: value or distribution, got {kind(data)}",
        )
        return ()
    params: list[Param] = []
    for option, entry in data.items():
        entries = _parse_option(rules, str(option), entry, declared, problems)
        if entries:
            values = [p.values() if p.kind in ("fixed", "categorical") else None for p in entries]
            declared[str(option)] = (
                None
                if None in values
                else tuple(
                    v
                    for i, vs in enumerate(values)
                    for v in vs
                    if not any(same(v, w) for w in sum(values[:i], ()))
                )
            )
            params.extend(entries)
    return tuple(params)


__all__ = ["MAX_RANGE_VALUES", "parse_space_section"]
