"""Search-space files: load and validate a YAML space over the normalizer's options, and sample it.

A space file has these top-level sections; only ``space`` is required::

    description: one line, shown by ``normsearch space list``
    space:       per option of NormConfig (or ``preset``): a fixed value or a distribution (see below)
    probe:       ProbeSettings (network, batch, seeds, inputs) the candidates are scored with; the network,
                 resolution, data and learning rate not given here follow ``confirm`` (:func:`matched_probe`)
    objective:   weights: {similarity, step_loss_ratio, activation_growth, grad_ratio} of the scalar score
    search:      SearchSettings: trial budget, timeout, sampler, seed, baselines
    confirm:     ConfirmSettings: which candidates get short training runs, and how

Each entry of ``space`` is one of, in Optuna's vocabulary:

- a fixed value: ``partition: group``;
- ``{choices: [v, ...]}``: a categorical choice;
- ``{low: a, high: b}`` with optional ``log: true`` or ``step: s``: an int range for ``groups`` /
  ``group_size``, a float range for ``eps`` / ``momentum``;
- ``{value: v}``: a fixed value, for use with ``when``;

and may carry ``when: {option: value or [values]}``: the entry applies only in trials where each named
option (declared above it, fixed or categorical) took one of those values. An option may also be a list of
such entries, its *variants*: the first whose ``when`` holds applies, and the last may omit ``when`` (the
"otherwise" case). An option no entry applies to keeps NormConfig's default.

Optuna parameter names: an entry without ``when`` is named after its option; a conditional one
``<branch>.<option>`` with branch ``key=value`` (values ``|``-joined, keys ``,``-joined), for example
``partition=group.group_size``. Each name so keeps a single distribution, as Optuna requires.

The scalar score (lower is better) of probe scores a = activation_growth (fitted ln-variance growth per
block), s = similarity, g = grad_ratio, r = step_loss_ratio, on a network with B probed block outputs, is

    score = w_s · (−ln(1 − min(s, 1 − 1e-6)))  +  w_r · ln r  +  w_a · (B − 1) · |a|  +  w_g · |ln g|

with default weights w_s = 1, w_r = 4, w_a = w_g = 0: it ranks the candidates that pass the search's
filters (:func:`normsearch.search.rejection`) by the two probes that predicted trained accuracy in the
measurements of docs/confirm.md ("Evidence for the score"); growth and gradient ratio serve as filters
there, and the gradient ratio ranked backwards. Every term is in e-folds: −ln(1 − s) grows without bound as
samples become indistinguishable (s = 0.9 → 2.3); ln r is the log change of the loss in one SGD step;
(B − 1)·|a| is the fitted |ln(v_last / v_first)|; |ln g| the log blow-up, or decay, of the gradient from
the last conv to the first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .confirm.settings import ConfirmSettings
from .data import NATIVE_RESOLUTION
from .norm import PRESETS, NormConfig, as_config
from .norm.config import ACTS, AFFINES, LAYOUTS, PARTITIONS, SCALES, WEIGHTS
from .probes.settings import ProbeSettings, probe_reads
from .score import ScoreWeights
from .settings import SettingsError, check_fields, check_value, from_mapping

SAMPLERS = ("tpe", "random", "nsga2", "brute_force")
SIMILARITY_CAP = 1 - 1e-6
RATIO_FLOOR = 1e-12
MAX_ENUMERATION = 20_000
"""Spaces with more grid points than this are reported as 'more than' (size) and not fully checked."""
MAX_RANGE_VALUES = 100_000
"""Most values an int range or a float range with a step may hold (each is enumerated for checks and grids)."""
MAX_NESTING = 32
"""Deepest nesting of YAML mappings and lists a space file may have (a space file needs 5)."""
MAX_WEIGHT = 1e6
"""Largest weight of a probe score (weights are relative; larger ones overflow the score)."""


class SpaceError(ValueError):
    """Problems in a space file: one line per problem, each ``FILE: key.path: what is allowed``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ------------------------------------------------------------------------------------------------------
# Settings sections of the file that are not probe/confirm settings


@dataclass(frozen=True)
class SearchSettings:
    """The search loop: trial budget, sampler and which baselines are enqueued."""

    n_trials: int = field(default=30, metadata={"min": 1, "help": "trial budget of the study (resumes count)"})
    timeout: float | None = field(default=None, metadata={"min": 0.0, "help": "seconds per run; null: none"})
    sampler: str = field(default="tpe", metadata={"choices": SAMPLERS, "help": "Optuna sampler"})
    seed: int = field(default=0, metadata={"min": 0, "help": "sampler seed (worker i uses seed + i)"})
    startup_trials: int = field(default=10, metadata={"min": 0, "help": "random trials before TPE models"})
    baselines: bool = field(default=True, metadata={"help": "enqueue the known layers inside the space"})

    def __post_init__(self) -> None:
        check_fields(self)


# ------------------------------------------------------------------------------------------------------
# The probe network follows the trained one


MATCHED = ("model", "depth", "width", "skipinit", "resolution", "data", "lr")
"""ProbeSettings fields that default to the confirmation's (:func:`matched_probe`)."""


def confirm_counterparts(confirm: ConfirmSettings) -> dict[str, Any]:
    """What each :data:`MATCHED` probe field is in the confirmation: its network, its resolution (the
    dataset's own when ``confirm.resolution`` is null), its dataset and its (peak) learning rate."""
    resolution = confirm.resolution or NATIVE_RESOLUTION.get(confirm.dataset)
    return {"model": confirm.model, "depth": confirm.depth, "width": confirm.width, "skipinit": confirm.skipinit,
            "resolution": resolution, "data": confirm.dataset, "lr": confirm.lr}


def matched_probe(confirm: ConfirmSettings) -> dict[str, Any]:
    """The defaults of a space's probe settings: the confirmation network (model, depth, width, skipinit),
    its input resolution and learning rate, and its data when the probes can read it (digits, and data that
    needs no ``data_dir``: :func:`~normsearch.probes.settings.probe_reads`). A field the ``probe:`` section
    gives overrides these; :func:`probe_differences` then lists it."""
    counterparts = confirm_counterparts(confirm)
    return {k: v for k, v in counterparts.items() if v is not None and (k != "data" or probe_reads(v))}


def probe_differences(probe: ProbeSettings, confirm: ConfirmSettings) -> dict[str, dict[str, Any]]:
    """``{field: {"probe": value, "confirm": value}}`` for each :data:`MATCHED` field where the probe
    network or inputs differ from what confirmation trains (empty: the probes see the trained network)."""
    counterparts = confirm_counterparts(confirm)
    return {k: {"probe": getattr(probe, k), "confirm": v} for k, v in counterparts.items()
            if getattr(probe, k) != v}


# ------------------------------------------------------------------------------------------------------
# What each option of the space may take


def _enum(allowed: tuple[str, ...]):
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in allowed else f"one of {', '.join(allowed)}"

    return check


def _boolean(nullable: bool):
    def check(value: Any) -> str | None:
        ok = isinstance(value, bool) or (nullable and value is None)
        return None if ok else "true or false" + (" or null (the partition's default)" if nullable else "")

    return check


def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return None if ok else "a positive integer"


def _number_in(low: float, high: float, high_open: bool, nullable: bool):
    interval = f"({low:g}, {high:g}{')' if high_open else ']'}"

    def check(value: Any) -> str | None:
        if nullable and value is None:
            return None
        ok = isinstance(value, int | float) and not isinstance(value, bool) and low < value
        ok = ok and (value < high if high_open else value <= high)
        return None if ok else f"a number in {interval}" + (" or null (the default)" if nullable else "")

    return check


OPTION_CHECKS = {
    "preset": _enum(tuple(PRESETS)),
    "partition": _enum(PARTITIONS),
    "groups": _positive_int,
    "group_size": _positive_int,
    "center": _boolean(nullable=False),
    "scale": _enum(SCALES),
    "eps": _number_in(0.0, 1.0, high_open=True, nullable=False),
    "running": _boolean(nullable=True),
    "momentum": _number_in(0.0, 1.0, high_open=False, nullable=True),
    "affine": _enum(AFFINES),
    "act": _enum(ACTS),
    "weight": _enum(WEIGHTS),
    "layout": _enum(LAYOUTS),
}
"""Option name → check(value) returning None if allowed, else what is allowed."""
RANGE_KINDS = {"groups": "int", "group_size": "int", "eps": "float", "momentum": "float"}
"""Options that may take a low/high range, and the kind of range."""
ENTRY_KEYS = ("value", "choices", "low", "high", "step", "log", "when")


# ------------------------------------------------------------------------------------------------------
# One entry of the space


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1."""
    return type(a) is type(b) and a == b


def _label(value: Any) -> str:
    """A value as written in YAML (for Optuna parameter names and tables)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Param:
    """One entry of the space: option ``option`` takes a fixed value, a choice or a range, maybe conditionally.

    kind: ``fixed`` (``choices`` holds the one value), ``categorical``, ``int`` or ``float`` (low..high,
    ``step``, ``log``). ``when``: ((option, allowed values), ...), all must hold for the entry to apply.
    ``name``: its Optuna parameter name; ``path``: where it is in the file (for messages).
    """

    option: str
    name: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    path: str = field(default="", compare=False)

    def applies(self, options: Mapping[str, Any]) -> bool:
        """Whether this entry sets its option, given the options drawn so far (an earlier variant wins)."""
        return self.option not in options and all(
            key in options and any(_same(options[key], v) for v in allowed) for key, allowed in self.when
        )

    def suggest(self, trial: Any) -> Any:
        """Draw this entry's value in an Optuna trial (fixed entries are not Optuna parameters)."""
        return _SUGGEST[self.kind](self, trial)

    def values(self) -> tuple[Any, ...] | None:
        """All values of a finite entry, or None for a continuous range."""
        if self.kind in ("fixed", "categorical"):
            return self.choices
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return tuple(self.low + i * self.step for i in range(count))

    def contains(self, value: Any) -> bool:
        """Whether the entry can take ``value``."""
        values = self.values()
        if values is not None:
            return any(_same(value, v) or (self.kind == "float" and math.isclose(value, v)) for v in values)
        return isinstance(value, float) and self.low <= value <= self.high

    def describe(self) -> str:
        """A short text of the distribution: ``= group``, ``1 | 2 | 4``, ``float 1e-06..0.001 log``."""
        if self.kind == "fixed":
            return f"= {_label(self.choices[0])}"
        if self.kind == "categorical":
            return " | ".join(map(_label, self.choices))
        extra = " log" if self.log else f" step {_label(self.step)}" if self.step is not None else ""
        return f"{self.kind} {_label(self.low)}..{_label(self.high)}{extra}"

    def condition(self) -> str:
        """The ``when`` clause as text (empty when unconditional)."""
        return _branch(self.when, sep=", ")


def format_options(options: Mapping[str, Any]) -> str:
    """Drawn options as ``key=value,...`` with values as written in YAML (for configs that did not build)."""
    return ",".join(f"{key}={_label(value)}" for key, value in options.items())


def _branch(when: tuple[tuple[str, tuple[Any, ...]], ...], sep: str = ",") -> str:
    return sep.join(f"{key}={'|'.join(map(_label, allowed))}" for key, allowed in when)


_SUGGEST = {
    "fixed": lambda p, trial: p.choices[0],
    "categorical": lambda p, trial: trial.suggest_categorical(p.name, list(p.choices)),
    "int": lambda p, trial: trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log),
    "float": lambda p, trial: _significant(trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log), p),
}


def _significant(value: float, param: Any) -> float:
    """A continuous draw rounded to 3 significant digits (inside the range): configs read ``eps=0.000553``,
    not 16 digits, and draws that differ only past the third digit share one config (and one probe)."""
    if param.step is not None:
        return value
    return min(max(float(f"{value:.3g}"), param.low), param.high)


# ------------------------------------------------------------------------------------------------------
# The whole space


@dataclass(frozen=True)
class SearchSpace:
    """A validated space file: the entries in declaration order, and the settings of every stage.

    ``name`` is the file stem (the default study name), ``path`` where it was read from, ``text`` its
    YAML source (stored in the study so it can be reproduced without the file).
    """

    name: str
    path: str
    text: str
    params: tuple[Param, ...]
    probe: ProbeSettings
    confirm: ConfirmSettings
    search: SearchSettings
    weights: ScoreWeights
    description: str = ""
    probe_given: frozenset[str] = frozenset()
    """The probe settings the file's ``probe:`` section gives; the others follow ``confirm``."""

    @property
    def sha256(self) -> str:
        """Hash of the YAML source."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def probe_differences(self) -> dict[str, dict[str, Any]]:
        """Where the probe network differs from the trained one (:func:`probe_differences`)."""
        return probe_differences(self.probe, self.confirm)

    def with_confirm(self, confirm: ConfirmSettings) -> SearchSpace:
        """This space with other confirmation settings, its probe settings following them as at load (those
        the ``probe:`` section gives stay). Raises ``SettingsError`` if they make an invalid probe."""
        matched = {k: v for k, v in matched_probe(confirm).items() if k not in self.probe_given}
        return dataclasses.replace(self, confirm=confirm, probe=dataclasses.replace(self.probe, **matched))

    def sample(self, trial: Any) -> dict[str, Any]:
        """Draw one candidate's options (NormConfig options, maybe ``preset``) from an Optuna trial."""
        options: dict[str, Any] = {}
        for param in self.params:
            if param.applies(options):
                options[param.option] = param.suggest(trial)
        return options

    @staticmethod
    def config(options: Mapping[str, Any]) -> NormConfig:
        """The NormConfig of drawn options; ``ValueError`` (naming the option) for a contradictory one."""
        return as_config(dict(options))

    def grid(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Every (Optuna params, options) point of a finite space, in declaration order.

        Raises ValueError if an active entry is a continuous range.
        """

        def walk(index: int, options: dict[str, Any], params: dict[str, Any]):
            if index == len(self.params):
                yield dict(params), dict(options)
                return
            param = self.params[index]
            if not param.applies(options):
                yield from walk(index + 1, options, params)
                return
            values = param.values()
            if values is None:
                raise ValueError(f"space.{param.option} is a continuous range")
            for value in values:
                options[param.option] = value
                if param.kind != "fixed":
                    params[param.name] = value
                yield from walk(index + 1, options, params)
                params.pop(param.name, None)
            options.pop(param.option, None)

        return walk(0, {}, {})

    def is_finite(self) -> bool:
        """Whether every entry takes finitely many values."""
        return all(p.values() is not None for p in self.params)

    def params_for(self, target: NormConfig) -> dict[str, Any] | None:
        """Optuna params of a point of the space whose config equals ``target``, or None if it is outside.

        Ranges take the target's value for their option (if inside); choices are searched.
        """

        def walk(index: int, options: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
            if index == len(self.params):
                try:
                    return dict(params) if self.config(options) == target else None
                except ValueError:
                    return None
            param = self.params[index]
            if not param.applies(options):
                return walk(index + 1, options, params)
            wanted = getattr(target, param.option, None)
            if param.kind in ("int", "float"):
                candidates = [wanted] if wanted is not None and param.contains(wanted) else []
            else:  # a choice must equal the target's value, unless it is the preset or a null default
                candidates = [
                    v for v in param.choices if param.option == "preset" or v is None or _same(v, wanted)
                ]
            for value in candidates:
                options[param.option] = value
                if param.kind != "fixed":
                    params[param.name] = value
                found = walk(index + 1, options, params)
                params.pop(param.name, None)
                if found is not None:
                    return found
            options.pop(param.option, None)
            return None

        return walk(0, {}, {})

    def size(self) -> tuple[int | None, int | None]:
        """(grid points, valid configs among them); (None, None) for a continuous space, and counts past
        :data:`MAX_ENUMERATION` are reported as None."""
        if not self.is_finite():
            return None, None
        points = valid = 0
        for _, options in itertools.islice(self.grid(), MAX_ENUMERATION + 1):
            points += 1
            try:
                self.config(options)
                valid += 1
            except ValueError:
                pass
        if points > MAX_ENUMERATION:
            return None, None
        return points, valid


# ------------------------------------------------------------------------------------------------------
# Loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):  # PyYAML's signature
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value (a name or a number), not a list or mapping",
                    key_node.start_mark
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(  # YAML 1.2 floats: PyYAML reads 1e-5 (no dot) as a string
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)

SECTIONS = ("description", "space", "probe", "objective", "search", "confirm")


def _check_nesting(text: str, label: str) -> None:
    """Refuse YAML nested deeper than :data:`MAX_NESTING`, before the (recursive) loader sees it.

    Reads PyYAML's event stream, which is not recursive, so a deep file costs no stack."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                mark = event.start_mark
                where = f"{label}: line {mark.line + 1}, column {mark.column + 1}"
                raise SpaceError([f"{where}: nested more than {MAX_NESTING} levels deep (a space file needs 5)"])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _Problems:
    """Collects one message per problem, each prefixed with the file label."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{self.label}: {path}: {message}" if path else f"{self.label}: {message}")


def _settings(cls: type, data: Any, prefix: str, problems: _Problems, defaults: Mapping[str, Any] | None = None) -> Any:
    """A settings section with every bad key reported (not just the first); ``defaults`` (valid values)
    under the keys it does not give; the class defaults if it has problems."""
    if data is not None and not isinstance(data, Mapping):
        problems.add(prefix, f"must be a mapping of settings, got {_kind(data)}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    good: dict[str, Any] = {}
    for key, value in (data or {}).items():
        path = f"{prefix}.{key}"
        if key not in fields:
            problems.add(path, f"unknown setting; allowed: {', '.join(fields)}")
            continue
        try:
            check_value(cls, fields[key], value, path)
            good[key] = value
        except SettingsError as err:
            problems.add(err.path, err.message)
    try:
        return from_mapping(cls, {**(defaults or {}), **good}, prefix)
    except SettingsError as err:  # a check across fields
        problems.add(err.path, err.message)
        return cls()


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), repr(value))


def _parse_when(
    path: str, data: Any, declared: Mapping[str, tuple[Any, ...] | None], problems: _Problems
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
            problems.add(where, f"must name an option declared above it in space; declared: "
                         f"{', '.join(declared) or 'none'}")
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
            if not any(_same(value, v) for v in possible):
                at = f"{where}[{i}]" if isinstance(allowed, list) else where
                problems.add(at, f"{_label(value)} is not a value of {key}; its values: "
                             f"{', '.join(map(_label, possible))}")
                return None
        conditions.append((key, values))
    return tuple(conditions)


def _check_values(option: str, values: list[Any], path: str, problems: _Problems) -> bool:
    check = OPTION_CHECKS[option]
    ok = True
    for i, value in enumerate(values):
        allowed = check(value)
        if allowed is not None:
            problems.add(path.format(i=i), f"must be {allowed}, got {value!r}")
            ok = False
    return ok


def _parse_range(option: str, path: str, entry: Mapping[str, Any], problems: _Problems) -> Param | None:
    kind = RANGE_KINDS.get(option)
    if kind is None:
        problems.add(path, f"low/high ranges apply only to {', '.join(RANGE_KINDS)}; use choices for {option}")
        return None
    if "low" not in entry or "high" not in entry:
        problems.add(path, "a range needs both low and high")
        return None
    low, high, step, log = entry["low"], entry["high"], entry.get("step"), entry.get("log", False)
    ok = _check_values(option, [low], f"{path}.low", problems) & _check_values(option, [high], f"{path}.high", problems)
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
            problems.add(path, f"holds {count} values; a range may hold at most {MAX_RANGE_VALUES}"
                         + (" (use log: true for a float option, or fewer values)" if kind == "float" else ""))
            ok = False
    if not ok:
        return None
    convert = int if kind == "int" else float
    return Param(option, option, kind, low=convert(low), high=convert(high),
                 step=None if step is None else convert(step), log=log)


def _parse_entry(
    option: str, path: str, entry: Any, declared: Mapping[str, tuple[Any, ...] | None], problems: _Problems
) -> Param | None:
    """One entry (a scalar or a mapping) of option ``option``, its errors reported at ``path``."""
    if isinstance(entry, list):
        problems.add(path, "a list of values is not a value: write {choices: [...]} for a categorical choice")
        return None
    if not isinstance(entry, Mapping):
        ok = _check_values(option, [entry], path, problems)
        return Param(option, option, "fixed", (entry,), path=path) if ok else None
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        problems.add(f"{path}.{unknown[0]}", f"unknown key; allowed: {', '.join(ENTRY_KEYS)}")
        return None
    forms = [k for k in ("value", "choices", "low") if k in entry] or (["low"] if "high" in entry else [])
    if len(forms) != 1:
        problems.add(path, "needs exactly one of value, choices or low/high"
                     + (f"; got {', '.join(forms)}" if forms else ""))
        return None
    if forms[0] != "low" and any(k in entry for k in ("high", "step", "log")):
        problems.add(path, "high/step/log belong to a low/high range")
        return None
    if forms[0] == "value":
        param = Param(option, option, "fixed", (entry["value"],)) if _check_values(
            option, [entry["value"]], f"{path}.value", problems) else None
    elif forms[0] == "choices":
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            problems.add(f"{path}.choices", f"must be a non-empty list, got {choices!r}")
            return None
        if not _check_values(option, choices, f"{path}.choices[{{i}}]", problems):
            return None
        repeated = [v for i, v in enumerate(choices) if any(_same(v, w) for w in choices[:i])]
        if repeated:
            problems.add(f"{path}.choices", f"lists {_label(repeated[0])} twice")
            return None
        param = Param(option, option, "categorical", tuple(choices))
    else:
        param = _parse_range(option, path, entry, problems)
    if param is None:
        return None
    param = dataclasses.replace(param, path=path)
    if "when" not in entry:
        return param
    when = _parse_when(path, entry["when"], declared, problems)
    return None if when is None else dataclasses.replace(param, when=when, name=f"{_branch(when)}.{option}")


def _parse_option(
    option: str, data: Any, declared: Mapping[str, tuple[Any, ...] | None], problems: _Problems
) -> list[Param]:
    """The entries of one option: a single entry, or a list of variants (first applicable wins)."""
    path = f"space.{option}"
    if option not in OPTION_CHECKS:
        problems.add(path, f"unknown option; allowed: {', '.join(OPTION_CHECKS)}")
        return []
    if not (isinstance(data, list) and data and all(isinstance(v, Mapping) for v in data)):
        param = _parse_entry(option, path, data, declared, problems)
        return [] if param is None else [param]
    params = []
    for i, entry in enumerate(data):
        if "when" not in entry and i < len(data) - 1:
            problems.add(f"{path}[{i}]", "only the last variant may omit when (it is the otherwise case)")
            return []
        param = _parse_entry(option, f"{path}[{i}]", entry, declared, problems)
        if param is None:
            return []
        earlier = [j for j, p in enumerate(params) if p.when == param.when]
        if earlier:
            problems.add(f"{path}[{i}].when", f"same condition as {path}[{earlier[0]}]: this variant never applies")
            return []
        params.append(param)
    return params


def _parse_space(data: Any, problems: _Problems) -> tuple[Param, ...]:
    if data is None:
        problems.add("space", "missing: the options to search, e.g. space: {partition: {choices: [batch, layer]}}")
        return ()
    if not isinstance(data, Mapping) or not data:
        problems.add("space", f"must be a non-empty mapping of option: value or distribution, got {_kind(data)}")
        return ()
    declared: dict[str, tuple[Any, ...] | None] = {}
    params: list[Param] = []
    for option, entry in data.items():
        entries = _parse_option(str(option), entry, declared, problems)
        if entries:
            values = [p.values() if p.kind in ("fixed", "categorical") else None for p in entries]
            declared[str(option)] = None if None in values else tuple(
                v for i, vs in enumerate(values) for v in vs if not any(_same(v, w) for w in sum(values[:i], ())))
            params.extend(entries)
    if params and not problems.items and all(p.kind == "fixed" for p in params):
        problems.add("space", "every option is fixed: give at least one option choices or a range")
    return tuple(params)


def parse_space(text: str, label: str, name: str, path: str) -> SearchSpace:
    """Validate YAML source ``text`` (errors prefixed by ``label``) into a :class:`SearchSpace`.

    Raises :class:`SpaceError` listing every problem found.
    """
    problems = _Problems(label)
    try:
        _check_nesting(text, label)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpaceError([f"{label}: {where}invalid YAML: {problem}"]) from None
    if not isinstance(data, Mapping):
        raise SpaceError([f"{label}: must be a mapping with a 'space' section, got {_kind(data)}"])
    for key in data:
        if key not in SECTIONS:
            problems.add(str(key), f"unknown section; allowed: {', '.join(SECTIONS)}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        problems.add("description", f"must be a string, got {description!r}")
        description = ""
    params = _parse_space(data.get("space"), problems)
    confirm = _settings(ConfirmSettings, data.get("confirm"), "confirm", problems)
    probe = _settings(ProbeSettings, data.get("probe"), "probe", problems, defaults=matched_probe(confirm))
    search = _settings(SearchSettings, data.get("search"), "search", problems)
    objective = data.get("objective")
    weights = ScoreWeights()
    if objective is not None and not (isinstance(objective, Mapping) and set(objective) <= {"weights"}):
        problems.add("objective", "must be a mapping with one key, weights: {similarity, step_loss_ratio, "
                     "activation_growth, grad_ratio}")
    elif objective is not None:
        weights = _settings(ScoreWeights, objective.get("weights"), "objective.weights", problems)
    given = frozenset(data["probe"]) if isinstance(data.get("probe"), Mapping) else frozenset()
    space = SearchSpace(name, path, text, params, probe, confirm, search, weights, description.strip(), given)
    if not problems.items:
        _check_fits(space, problems, "probe" if given & {"model", "depth", "width", "skipinit"} else "confirm")
    if search.sampler == "brute_force" and not space.is_finite():
        ranges = ", ".join(p.path for p in params if p.values() is None)
        problems.add("search.sampler", f"brute_force needs a finite space; continuous: {ranges}")
    if not problems.items and space.is_finite():
        points, valid = space.size()
        if valid == 0:
            problems.add("space", f"none of its {points} points is a valid config (e.g. "
                         f"{_first_error(space)}): check the conditions")
    if problems.items:
        raise SpaceError(problems.items)
    return space


def probe_channels(settings: ProbeSettings) -> tuple[int, ...]:
    """Channel counts of the probe network's normalization slots (ValueError for impossible settings)."""
    from .models import build_model
    from .norm import UnifiedNorm

    model = build_model(settings.model, "bn", depth=settings.depth, width=settings.width,
                        skipinit=settings.skipinit, resolution=settings.resolution)
    return tuple(sorted({m.num_channels for m in model.modules() if isinstance(m, UnifiedNorm)}))


def _fits(value: int, channels: tuple[int, ...]) -> bool:
    """Whether a groups (G) or group_size (C/G) value divides every channel count C."""
    return all(c % value == 0 for c in channels)


def _check_fits(space: SearchSpace, problems: _Problems, network_from: str) -> None:
    """Every listed groups / group_size value must divide every channel count of the probe network;
    a network that cannot be built is reported under ``network_from`` (the section that defined it).

    Ranges are not checked value by value: their non-divisors fail as trials.
    """
    try:
        channels = probe_channels(space.probe)
    except ValueError as err:
        problems.add(network_from, str(err).split(": ", 1)[-1])
        return
    for param in space.params:
        if param.option not in ("groups", "group_size") or param.kind not in ("fixed", "categorical"):
            continue
        allowed = [v for v in param.choices if _fits(v, channels)]
        for i, value in enumerate(param.choices):
            if not _fits(value, channels):
                where = f"{param.path}.choices[{i}]" if param.kind == "categorical" else param.path
                problems.add(where, f"{value} does not fit the probe network's channel counts "
                             f"{', '.join(map(str, channels))} ({space.probe.model}-{space.probe.depth} width "
                             f"{space.probe.width}); fitting values here: {', '.join(map(str, allowed)) or 'none'}")


def _first_error(space: SearchSpace) -> str:
    for _, options in space.grid():
        try:
            space.config(options)
        except ValueError as err:
            return str(err)
    return ""


# ------------------------------------------------------------------------------------------------------
# Files and shipped spaces


def shipped_spaces() -> dict[str, Any]:
    """Name → resource of each space shipped inside the package (``normsearch/spaces/*.yaml``)."""
    folder = resources.files("normsearch") / "spaces"
    return {p.name.removesuffix(".yaml"): p for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")}


def resolve(path_or_name: str | Path) -> tuple[str, str, str]:
    """(label, path, YAML text) of a space file, or of the shipped space of that bare name.

    A bare name (no directory part) that is not an existing file resolves to the shipped space
    ``name`` or ``name.yaml``. Raises SpaceError if neither exists.
    """
    given = str(path_or_name)
    path = Path(given)
    if path.is_file():
        try:
            return given, str(path), path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SpaceError([f"{given}: cannot read: {err}"]) from None
    shipped = shipped_spaces()
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.parent == Path(".") and stem in shipped:
        return f"{stem}.yaml", f"shipped:{stem}", shipped[stem].read_text(encoding="utf-8")
    hint = f"; shipped spaces: {', '.join(shipped)}" if path.parent == Path(".") else ""
    raise SpaceError([f"{given}: no such space file{hint}"])


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def load_space(path_or_name: str | Path) -> SearchSpace:
    """Load and validate a space file (or shipped space name). Raises :class:`SpaceError`."""
    label, path, text = resolve(path_or_name)
    stem = Path(label).name.removesuffix(".yaml").removesuffix(".yml")
    name = stem if _NAME.fullmatch(stem) else "study"
    return parse_space(text, label, name, path)


__all__ = [
    "MATCHED",
    "OPTION_CHECKS",
    "SAMPLERS",
    "Param",
    "ScoreWeights",
    "SearchSettings",
    "SearchSpace",
    "SpaceError",
    "format_options",
    "load_space",
    "matched_probe",
    "parse_space",
    "probe_differences",
    "resolve",
    "shipped_spaces",
]
