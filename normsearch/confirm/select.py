"""Which candidates of a study are admitted to the first rung of the confirmation.

From the leaderboard rows (one per finished trial, with its ``config``, ``baseline`` flag, scalar ``score``
(lower is better), ``objectives``, ``pareto`` flag and ``rejected`` reason), each config once (the
best-scored trial stands for its config; a config any baseline trial has is a baseline), in this order:

0. ``default``: the space's default layer (``settings.default``), always, even when rejected or when it is
   not in the study (then as trial :data:`DEFAULT_TRIAL`): the schedule trains it at the final budget,
   so the winner is compared with what a user would pick anyway;
1. ``top``: the ``top_k`` best-scored configs (not baselines when ``baselines`` admits those anyway);
2. ``explore``: ``explore`` more configs from the Pareto front of the objectives, taking in turn the best
   front member on each objective (each of the study's objectives, then again) that is not admitted yet.
   So a score whose weights are off cannot keep out the layer that is best on one probe;
3. ``baseline``: every baseline config, when ``baselines`` is on (the references, even when rejected:
   that is also how a filter gets checked);
4. ``random``: ``random`` further configs drawn uniformly from the rest with ``random.Random(seed)``,
   so that the calibration also sees mid- and low-ranked candidates.

Only stable (state COMPLETE), non-rejected rows compete for 1, 2 and 4. **Budget**: with ``max_cost`` set,
the admitted list is cut from its end (random, baselines, explorers, then top-k) until the schedule's
worst-case cost (:func:`~normsearch.confirm.settings.schedule_cost`) is at most ``max_cost`` of what
``confirm --all`` trains on the study's configs (a default outside the study costs, but does not count
among them); the default and the first other candidate always stay. ``all_candidates`` admits
every config of a COMPLETE trial, and the default (what ``confirm --all`` trains).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .settings import ConfirmSettings, schedule_cost

DEFAULT_TRIAL = -1
"""The trial number a default layer that is not in the study trains under (units record it as their trial)."""


@dataclass(frozen=True)
class Candidate:
    """A trial chosen for training: its number, config spec, baseline flag and why it was chosen."""

    trial: int
    config: str
    baseline: bool
    reason: str


def _score(row: Mapping[str, Any]) -> float:
    score = row.get("score")
    return score if isinstance(score, int | float) and math.isfinite(score) else math.inf


def _ranked(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per config (its best-scored trial), best score first."""
    best: dict[str, Mapping[str, Any]] = {}
    for row in sorted((r for r in rows if r.get("config")), key=lambda r: (_score(r), r["trial"])):
        best.setdefault(row["config"], row)
    return list(best.values())


def _eligible(row: Mapping[str, Any]) -> bool:
    return row.get("state", "COMPLETE") == "COMPLETE" and not row.get("rejected")


def _front_in_turn(front: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Front members taken in turn as the best remaining on each objective (ties: by score order)."""
    names = list(front[0].get("objectives", {})) if front else []
    orders = [sorted(front, key=lambda r, n=n: r["objectives"][n]) for n in names]
    out: list[Mapping[str, Any]] = []
    for order in itertools.cycle(orders) if orders else ():
        pick = next((r for r in order if r not in out), None)
        if pick is None:
            break
        out.append(pick)
    return out


def _default(rows: Sequence[Mapping[str, Any]], config: str, reason: str) -> Candidate:
    """The default layer as a candidate: under its best-scored trial when the study has it."""
    row = next((r for r in _ranked(rows) if r["config"] == config), None)
    return Candidate(DEFAULT_TRIAL if row is None else row["trial"], config, True, reason)


def select_candidates(rows: Sequence[Mapping[str, Any]], settings: ConfirmSettings) -> list[Candidate]:
    """The candidates admitted to the first rung (see the module docstring); rows with no config are ignored."""
    ranked = _ranked(rows)
    baselines = {r["config"] for r in rows if r.get("config") and r.get("baseline")}
    chosen: dict[str, Candidate] = {settings.default: _default(rows, settings.default, "default")}

    def take(row: Mapping[str, Any], reason: str) -> None:
        config = row["config"]
        chosen.setdefault(config, Candidate(row["trial"], config, config in baselines, reason))

    eligible = [r for r in ranked if _eligible(r)]
    tops = [r for r in eligible if not (settings.baselines and r["config"] in baselines)]
    for row in [r for r in tops if r["config"] not in chosen][: settings.top_k]:
        take(row, "top")
    front = [
        r
        for r in eligible
        if r.get("pareto")
        and r["config"] not in chosen
        and not (settings.baselines and r["config"] in baselines)
    ]  # baselines are admitted anyway
    for row in _front_in_turn(front)[: settings.explore]:
        take(row, "pareto")
    for row in ranked if settings.baselines else []:
        if row["config"] in baselines:
            take(row, "baseline")
    rest = [r for r in eligible if r["config"] not in chosen]
    for row in random.Random(settings.seed).sample(rest, min(settings.random, len(rest))):
        take(row, "random")
    admitted = list(chosen.values())
    if settings.max_cost is not None:
        configs = len(all_candidates(rows))  # the study's configs: a default outside it is not counted
        while len(admitted) > 2 and schedule_cost(len(admitted), configs, settings) > settings.max_cost:
            admitted.pop()
    return admitted


def all_candidates(rows: Sequence[Mapping[str, Any]], default: str | None = None) -> list[Candidate]:
    """Every config of a COMPLETE trial (stable or not, rejected or not), best score first; then the
    ``default`` config when given and not among them."""
    baselines = {r["config"] for r in rows if r.get("config") and r.get("baseline")}
    out = [
        Candidate(r["trial"], r["config"], r["config"] in baselines, "all")
        for r in _ranked(rows)
        if r.get("state", "COMPLETE") in ("COMPLETE", "UNSTABLE")
    ]
    if default is not None and default not in {c.config for c in out}:
        out.append(_default(rows, default, "all"))
    return out
