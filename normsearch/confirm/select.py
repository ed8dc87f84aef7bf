"""Which candidates of a study get confirmed by training.

From the leaderboard rows (one per finished trial, with its ``config``, ``baseline`` flag and scalar
``score``, lower is better), in this order and each config once (the best-scored trial stands for its
config, and a config any baseline trial has is a baseline):

1. ``top``: the ``top_k`` best-scored non-baseline configs;
2. ``baseline``: every baseline config, when ``baselines`` is on;
3. ``random``: ``random`` further configs drawn uniformly from the rest with ``random.Random(seed)``,
   so that the calibration also sees mid- and low-ranked candidates.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .settings import ConfirmSettings


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


def select_candidates(rows: Sequence[Mapping[str, Any]], settings: ConfirmSettings) -> list[Candidate]:
    """The candidates to train (see the module docstring); rows with no config are ignored."""
    best: dict[str, Mapping[str, Any]] = {}
    for row in sorted((r for r in rows if r.get("config")), key=lambda r: (_score(r), r["trial"])):
        best.setdefault(row["config"], row)
    ranked = list(best.values())
    baselines = {r["config"] for r in rows if r.get("config") and r.get("baseline")}
    chosen: dict[str, Candidate] = {}

    def take(row: Mapping[str, Any], reason: str) -> None:
        config = row["config"]
        chosen.setdefault(config, Candidate(row["trial"], config, config in baselines, reason))

    for row in [r for r in ranked if r["config"] not in baselines][: settings.top_k]:
        take(row, "top")
    for row in ranked if settings.baselines else []:
        if row["config"] in baselines:
            take(row, "baseline")
    rest = [r for r in ranked if r["config"] not in chosen]
    for row in random.Random(settings.seed).sample(rest, min(settings.random, len(rest))):
        take(row, "random")
    return list(chosen.values())
