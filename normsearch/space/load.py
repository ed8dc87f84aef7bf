"""Loading a space file: the YAML (safe, no repeated keys, bounded nesting), its sections, every problem
found (:class:`~normsearch.space.problems.SpaceError`), and the spaces shipped with the package."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..candidate import CandidateConfig
from ..confirm.settings import ConfirmSettings
from ..models import network_options
from ..probes.settings import ProbeSettings
from ..score import ScoreWeights
from ..settings import SettingsError, check_value, from_mapping
from .checks import LAYER_RULES, SectionRules, network_rules
from .entries import parse_space_section
from .fit import check_fits
from .model import SearchSpace
from .problems import Problems, SpaceError, kind
from .sections import SearchSettings, matched_probe

MAX_NESTING = 32
"""Deepest nesting of YAML mappings and lists a space file may have (a space file needs 5)."""
MAX_BYTES = 65_536
"""Most characters a space file may hold (the shipped ones hold 1 to 3 thousand): PyYAML reads about 20 kB/s
on a loaded core, so a larger file would take minutes to be refused."""
MAX_VALUES = 20_000
"""Most values (scalars, lists and mappings, each alias counted as the value it names) a space file may hold."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):  # PyYAML's signature
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a key must be a plain value (a name or a number), not a list or mapping",
                    key_node.start_mark,
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

SECTIONS = ("description", "space", "network", "probe", "objective", "search", "confirm", "default")


def _check_shape(text: str, label: str) -> None:
    """Refuse a space file larger than :data:`MAX_BYTES`, nested deeper than :data:`MAX_NESTING`, or whose
    aliases expand it to more than :data:`MAX_VALUES` values (a "billion laughs" file: a few hundred bytes of
    ``&a``/``*a`` that expand to millions), before the (recursive) loader sees it.

    Reads PyYAML's event stream, which is not recursive, so a deep file costs no stack, and an alias is
    counted as the size of its anchor's value, not expanded."""
    if len(text) > MAX_BYTES:
        raise SpaceError(
            [
                (
                    f"{label}: holds more than {MAX_BYTES} characters, the most a space file may hold (one needs a "
                    "few thousand)"
                )
            ]
        )
    sizes: dict[str, int] = {}  # anchor → values its node expands to
    open_: list[tuple[str | None, int]] = []  # the collections being read: (anchor, values before it)
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        mark = event.start_mark
        where = f"{label}: line {mark.line + 1}, column {mark.column + 1}"
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                raise SpaceError(
                    [f"{where}: alias *{event.anchor} inside its own anchor (a value that holds itself)"]
                )
            total += sizes[event.anchor]
        elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            total += 1
            if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                open_.append((event.anchor, total - 1))
                if len(open_) > MAX_NESTING:
                    raise SpaceError(
                        [f"{where}: nested more than {MAX_NESTING} levels deep (a space file needs 5)"]
                    )
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_.pop()
            if anchor is not None:
                sizes[anchor] = total - before
        if total > MAX_VALUES:
            raise SpaceError(
                [
                    (
                        f"{where}: holds more than {MAX_VALUES} values, each alias counted as the value it names (a space "
                        "file needs a few hundred)"
                    )
                ]
            )


def _line_column(text: str, position: int) -> tuple[int, int]:
    """The 1-based line and column of character ``position`` of ``text``."""
    return text.count("\n", 0, position) + 1, position - text.rfind("\n", 0, position)


def _settings(
    cls: type, data: Any, prefix: str, problems: Problems, defaults: Mapping[str, Any] | None = None
) -> Any:
    """A settings section with every bad key reported (not just the first); ``defaults`` (valid values)
    under the keys it does not give; the class defaults if it has problems."""
    if data is not None and not isinstance(data, Mapping):
        problems.add(prefix, f"must be a mapping of settings, got {kind(data)}")
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


def _default(data: Mapping[str, Any], problems: Problems) -> dict[str, Any]:
    """The top-level ``default:`` key (the layer a user would pick anyway; :attr:`ConfirmSettings.default`)
    as a confirmation setting, if it is given and valid; the ``confirm:`` section may not give it too."""
    confirm = data.get("confirm")
    if isinstance(confirm, Mapping) and "default" in confirm:
        problems.add("confirm.default", "give the default layer at the top level of the file: default: SPEC")
    if data.get("default") is None:
        return {}
    field = next(f for f in dataclasses.fields(ConfirmSettings) if f.name == "default")
    try:
        return {"default": check_value(ConfirmSettings, field, data["default"], "default")}
    except SettingsError as err:
        problems.add(err.path, err.message)
        return {}


def parse_space(text: str, label: str, name: str, path: str) -> SearchSpace:
    """Validate YAML source ``text`` (errors prefixed by ``label``) into a :class:`SearchSpace`.

    Raises :class:`SpaceError` listing every problem found.
    """
    problems = Problems(label)
    try:
        _check_shape(text, label)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.reader.ReaderError as err:  # a character YAML does not allow: a position, not a mark
        line, column = _line_column(text, err.position)
        raise SpaceError(
            [
                f"{label}: line {line}, column {column}: invalid YAML: character #x{err.character:04x} is not allowed"
            ]
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpaceError([f"{label}: {where}invalid YAML: {problem}"]) from None
    if not isinstance(data, Mapping):
        raise SpaceError([f"{label}: must be a mapping with a 'space' section, got {kind(data)}"])
    for key in data:
        if key not in SECTIONS:
            problems.add(str(key), f"unknown section; allowed: {', '.join(SECTIONS)}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        problems.add("description", f"must be a string, got {description!r}")
        description = ""
    settings = Problems(label)  # reported after the entries, as the file reads
    confirm = _settings(
        ConfirmSettings, data.get("confirm"), "confirm", settings, defaults=_default(data, settings)
    )
    probe = _settings(ProbeSettings, data.get("probe"), "probe", settings, defaults=matched_probe(confirm))
    params, defaults = _entries(data, probe, confirm, problems)
    problems.items += settings.items
    if defaults:  # the default layer is trained as the baselines are queued: with the network's defaults
        given = CandidateConfig.parse(confirm.default)
        confirm = dataclasses.replace(
            confirm, default=CandidateConfig.of(given.layer, {**defaults, **given.options}).spec()
        )
    search = _settings(SearchSettings, data.get("search"), "search", problems)
    objective = data.get("objective")
    weights = ScoreWeights()
    if objective is not None and not (isinstance(objective, Mapping) and set(objective) <= {"weights"}):
        problems.add(
            "objective",
            "must be a mapping with one key, weights: {similarity, step_loss_ratio, "
            "activation_growth, grad_ratio}",
        )
    elif objective is not None:
        weights = _settings(ScoreWeights, objective.get("weights"), "objective.weights", problems)
    given = frozenset(data["probe"]) if isinstance(data.get("probe"), Mapping) else frozenset()
    space = SearchSpace(
        name, path, text, params, probe, confirm, search, weights, description.strip(), given, defaults
    )
    if not problems.items:
        check_fits(space, problems, "probe" if given & {"model", "depth", "width", "skipinit"} else "confirm")
    if search.sampler == "brute_force" and not space.is_finite():
        ranges = ", ".join(p.path for p in params if p.values() is None)
        problems.add("search.sampler", f"brute_force needs a finite space; continuous: {ranges}")
    if not problems.items and space.is_finite():
        points, valid = space.size()
        if valid == 0:
            problems.add(
                "space",
                f"none of its {points} points is a valid config (e.g. "
                f"{_first_error(space)}): check the conditions",
            )
    if problems.items:
        raise SpaceError(problems.items)
    return space


def _networks(probe: ProbeSettings, confirm: ConfirmSettings) -> SectionRules:
    """The rules of the ``network:`` section: the options the trained network (and the probed one, where it
    is another) takes."""
    models = list(dict.fromkeys((confirm.model, probe.model)))
    return network_rules([network_options(model) for model in models])


def _entries(
    data: Mapping[str, Any], probe: ProbeSettings, confirm: ConfirmSettings, problems: Problems
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The entries of ``space:`` and ``network:`` in file order (a condition may name an option of a section
    above it), and the trained network's defaults of the network options declared."""
    if "space" not in data:
        parse_space_section(None, problems)
    declared: dict[str, Any] = {}
    params: list[Any] = []
    for section in (key for key in data if key in ("space", "network")):
        try:
            rules = LAYER_RULES if section == "space" else _networks(probe, confirm)
        except ValueError as err:  # a model name the settings sections reported already
            problems.add(section, f"the network's options cannot be read: {err}")
            continue
        params += parse_space_section(data[section], problems, rules, declared)
    if params and not problems.items and all(p.kind == "fixed" for p in params):
        problems.add("space", "every option is fixed: give at least one option choices or a range")
    if problems.items:
        return tuple(params), {}
    options = network_options(confirm.model)
    defaults = {
        p.option: option.default
        for p in params
        if p.section == "network"
        and (option := options.get(p.option)) is not None
        and option.default is not inspect.Parameter.empty
    }
    return tuple(params), defaults


def _first_error(space: SearchSpace) -> str:
    for _, options in space.grid():
        try:
            space.config(options)
        except ValueError as err:
            return str(err)
    return ""


def shipped_spaces() -> dict[str, Any]:
    """Name → resource of each space shipped inside the package (``normsearch/spaces/*.yaml``)."""
    folder = resources.files("normsearch") / "spaces"
    return {
        p.name.removesuffix(".yaml"): p
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".yaml")
    }


def resolve(path_or_name: str | Path) -> tuple[str, str, str]:
    """(label, path, YAML text) of a space file, or of the shipped space of that bare name.

    A bare name (no directory part) that is not an existing file resolves to the shipped space
    ``name`` or ``name.yaml``. Raises SpaceError if neither exists.
    """
    given = str(path_or_name)
    path = Path(given)
    if path.is_file():
        try:
            with path.open(encoding="utf-8") as file:  # no more than parse_space reads (MAX_BYTES)
                return given, str(path), file.read(MAX_BYTES + 1)
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
    "MAX_BYTES",
    "MAX_NESTING",
    "MAX_VALUES",
    "SECTIONS",
    "load_space",
    "parse_space",
    "resolve",
    "shipped_spaces",
]
