"""The space model: its entries (:class:`Param`) and the whole space (:class:`SearchSpace`): sampling in an
Optuna trial, the grid of a finite space, and where a given candidate lies in it.

Drawn options are one mapping, layer options (``space:``) and network options (``network:``) together (their
names are disjoint); :meth:`SearchSpace.candidate` splits them into a
:class:`~normsearch.models.CandidateConfig`."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..candidate import CandidateConfig
from ..confirm.settings import ConfirmSettings
from ..models import network_options
from ..norm import NormConfig, as_config
from ..probes.settings import ProbeSettings
from ..score import ScoreWeights
from ..settings import SettingsError
from .sections import SearchSettings, matched_probe, probe_differences

_MISSING = object()
MAX_ENUMERATION = 20_000
"""Spaces with more grid points than this are reported as 'more than' (size) and not fully checked."""


def same(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1."""
    return type(a) is type(b) and a == b


def as_yaml(value: Any) -> str:
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
    ``name``: its Optuna parameter name; ``path``: where it is in the file (for messages); ``section``:
    ``space`` (a layer option) or ``network`` (a network option).
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
    section: str = "space"

    def applies(self, options: Mapping[str, Any]) -> bool:
        """Whether this entry sets its option, given the options drawn so far (an earlier variant wins)."""
        return self.option not in options and all(
            key in options and any(same(options[key], v) for v in allowed) for key, allowed in self.when
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
            return any(same(value, v) or (self.kind == "float" and math.isclose(value, v)) for v in values)
        return isinstance(value, float) and self.low <= value <= self.high

    def describe(self) -> str:
        """A short text of the distribution: ``= group``, ``1 | 2 | 4``, ``float 1e-06..0.001 log``."""
        if self.kind == "fixed":
            return f"= {as_yaml(self.choices[0])}"
        if self.kind == "categorical":
            return " | ".join(map(as_yaml, self.choices))
        extra = " log" if self.log else f" step {as_yaml(self.step)}" if self.step is not None else ""
        return f"{self.kind} {as_yaml(self.low)}..{as_yaml(self.high)}{extra}"

    def condition(self) -> str:
        """The ``when`` clause as text (empty when unconditional)."""
        return branch(self.when, sep=", ")


def format_options(options: Mapping[str, Any]) -> str:
    """Drawn options as ``key=value,...`` with values as written in YAML (for configs that did not build)."""
    return ",".join(f"{key}={as_yaml(value)}" for key, value in options.items())


def branch(when: tuple[tuple[str, tuple[Any, ...]], ...], sep: str = ",") -> str:
    return sep.join(f"{key}={'|'.join(map(as_yaml, allowed))}" for key, allowed in when)


_SUGGEST = {
    "fixed": lambda p, trial: p.choices[0],
    "categorical": lambda p, trial: trial.suggest_categorical(p.name, list(p.choices)),
    "int": lambda p, trial: trial.suggest_int(
        p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log
    ),
    "float": lambda p, trial: _significant(
        trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log), p
    ),
}


def _significant(value: float, param: Any) -> float:
    """A continuous draw rounded to 3 significant digits (inside the range): configs read ``eps=0.000553``,
    not 16 digits, and draws that differ only past the third digit share one config (and one probe)."""
    if param.step is not None:
        return value
    return min(max(float(f"{value:.3g}"), param.low), param.high)


@dataclass(frozen=True)
class SearchSpace:
    """A validated space file: the entries in declaration order, and the settings of every stage.

    ``name`` is the file stem (the default study name), ``path`` where it was read from, ``text`` its
    YAML source (stored in the study so it can be reproduced without the file). ``params`` holds the entries
    of ``space:`` and ``network:`` in file order; ``network_defaults``: the trained network's defaults of the
    options ``network:`` searches (the known layers are enqueued with them where the space allows).
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
    network_defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def network_names(self) -> frozenset[str]:
        """The options of the ``network:`` section."""
        return frozenset(p.option for p in self.params if p.section == "network")

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
        if confirm.model != self.confirm.model:
            self._check_network(confirm.model)
        return dataclasses.replace(self, confirm=confirm, probe=dataclasses.replace(self.probe, **matched))

    def _check_network(self, model: str) -> None:
        """Raise ``SettingsError`` at ``confirm.model`` if ``model`` does not take every value of the
        ``network:`` section (a model given on the command line after the file was checked)."""
        options = network_options(model)
        for param in (p for p in self.params if p.section == "network"):
            option = options.get(param.option)
            if option is None:
                raise SettingsError(
                    "confirm.model", f"{model}: {param.path}: {options.unknown(param.option)}"
                )
            for value in param.values() or (param.low, param.high):
                allowed = option.problem(value)
                if allowed is not None:
                    raise SettingsError(
                        "confirm.model", f"{model}: {param.path}: must be {allowed}, got {value!r}"
                    )

    def sample(self, trial: Any) -> dict[str, Any]:
        """Draw one candidate's options (NormConfig options, maybe ``preset``, and network options) from an
        Optuna trial."""
        options: dict[str, Any] = {}
        for param in self.params:
            if param.applies(options):
                options[param.option] = param.suggest(trial)
        return options

    def config(self, options: Mapping[str, Any]) -> NormConfig:
        """The NormConfig of drawn options (their layer options); ``ValueError`` (naming the option) for a
        contradictory one."""
        network = self.network_names
        return as_config({k: v for k, v in options.items() if k not in network})

    def candidate(self, options: Mapping[str, Any]) -> CandidateConfig:
        """The candidate of drawn options: their layer config and network options; ``ValueError`` as
        :meth:`config`."""
        network = self.network_names
        return CandidateConfig.of(self.config(options), {k: v for k, v in options.items() if k in network})

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

    def params_for(self, target: NormConfig | CandidateConfig) -> dict[str, Any] | None:
        """Optuna params of a point of the space whose candidate equals ``target``, or None if it is outside.

        Ranges take the target's value for their option (if inside); choices are searched. A layer config
        alone (a known layer) takes the network options at :attr:`network_defaults` (an entry without the
        default in it: its first value that gives a point).
        """
        goal = target if isinstance(target, CandidateConfig) else None
        layer = target.layer if goal is not None else target

        def matches(options: dict[str, Any]) -> bool:
            try:
                candidate = self.candidate(options)
            except ValueError:
                return False
            return candidate.layer == layer and (goal is None or candidate.network == goal.network)

        def network_values(param: Param) -> list[Any]:
            if goal is not None:
                wanted = goal.options.get(param.option, _MISSING)
                return [wanted] if wanted is not _MISSING and param.contains(wanted) else []
            default = self.network_defaults.get(param.option, _MISSING)
            if default is not _MISSING and param.contains(default):
                return [default]
            return list(param.values() or ())

        def walk(index: int, options: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
            if index == len(self.params):
                return dict(params) if matches(options) else None
            param = self.params[index]
            if not param.applies(options):
                return walk(index + 1, options, params)
            wanted = getattr(layer, param.option, None)
            if param.section == "network":
                candidates = network_values(param)
            elif param.kind in ("int", "float"):
                candidates = [wanted] if wanted is not None and param.contains(wanted) else []
            else:  # a choice must equal the target's value, unless it is the preset or a null default
                candidates = [
                    v for v in param.choices if param.option == "preset" or v is None or same(v, wanted)
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


__all__ = ["MAX_ENUMERATION", "Param", "SearchSpace", "as_yaml", "branch", "format_options", "same"]
