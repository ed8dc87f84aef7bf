"""Where an exported layer came from (study, trial, probe scores, confirmed accuracy), as docstring lines.

Provenance text is read from a study's storage, i.e. from a file: it reaches the generated code only
through :func:`docstring_text`, which escapes everything that could end or break a ``\"\"\"`` docstring.
Numbers are converted with ``float``/``int`` first, so only their formatted values are emitted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROBE_KEYS = ("activation_growth", "similarity", "grad_ratio", "step_loss_ratio", "score")
"""Leaderboard columns reported as probe scores, in this order (similarity and step_loss_ratio are the
search's two objectives, score their weighted sum with the filters' terms)."""


def docstring_text(value: object) -> str:
    """``str(value)`` made inert inside a ``\"\"\"`` docstring.

    Backslashes and double quotes are backslash-escaped, and characters that are not printable (newlines,
    tabs, other line or paragraph separators, control characters) become escape sequences, so the text
    stays on one line and the docstring's value still reads as the original.
    """
    out = []
    for char in str(value):
        if char in '\\"':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        else:
            out.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Provenance:
    """A leaderboard row's identity and scores: ``study`` name, ``trial`` number, leaderboard ``rank``,
    probe ``scores`` (name → value); when the trial was confirmed, its ``accuracy`` (best validation
    accuracy, mean over ``seeds`` seeds), ``diverged``, and what it was trained for: ``budget`` (epochs),
    ``lr`` and ``dataset``; and the ``network`` options the layer was searched and trained with (the export
    is the layer alone).
    """

    study: str
    trial: int
    rank: int | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    accuracy: float | None = None
    diverged: bool | None = None
    budget: int | None = None
    lr: float | None = None
    seeds: int | None = None
    dataset: str | None = None
    network: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, study: str, row: Mapping[str, Any], dataset: str | None = None) -> Provenance:
        """From one row of :func:`normsearch.leaderboard.build_rows` (keys trial, rank, probe scores, and
        accuracy, budget, lr and the ``confirm`` record when confirmed); ``dataset``: the confirmation's."""
        rank = row.get("rank")
        diverged = row.get("diverged")
        budget = _number(row.get("budget")) or None  # 0: a record that did not keep its budget
        seeds = (row.get("confirm") or {}).get("seeds")
        return cls(
            study=str(study),
            trial=int(row["trial"]),
            rank=None if rank is None else int(rank),
            scores={key: _number(row.get(key)) for key in PROBE_KEYS if key in row},
            accuracy=_number(row.get("accuracy")),
            diverged=None if diverged is None else bool(diverged),
            budget=None if budget is None else int(budget),
            lr=_number(row.get("lr")),
            seeds=len(seeds) if isinstance(seeds, list) and seeds else None,
            dataset=None if dataset is None else str(dataset),
            network=dict(row.get("network") or {}),
        )

    @classmethod
    def of(cls, study: Any, row: Mapping[str, Any]) -> Provenance:
        """From a row of ``study`` (an Optuna study), with the dataset of its confirmation settings."""
        return cls.from_row(study.study_name, row, (study.user_attrs.get("confirm") or {}).get("dataset"))

    def lines(self) -> list[str]:
        """Docstring lines, already escaped."""
        where = f"Provenance: study '{docstring_text(self.study)}', trial {int(self.trial)}"
        lines = [where + ("" if self.rank is None else f" (leaderboard rank {int(self.rank)})") + "."]
        if self.scores:
            scores = ", ".join(f"{docstring_text(k)} {_format(v)}" for k, v in self.scores.items())
            lines.append(f"Probe scores: {scores}.")
        if self.accuracy is not None or self.diverged is not None:
            seeds = "" if self.seeds is None else f", mean of {int(self.seeds)} seed(s)"
            confirmed = (
                f"Confirmed by training: validation accuracy {_format(self.accuracy)} (best epoch{seeds})"
            )
            trained = [
                *([] if self.budget is None else [f"after {int(self.budget)} epoch(s)"]),
                *([] if self.lr is None else [f"at lr {_format(self.lr)}"]),
                *([] if self.dataset is None else [f"on {docstring_text(self.dataset)}"]),
            ]
            lines.append(" ".join([confirmed, *trained]) + (", diverged." if self.diverged else "."))
        if self.network:
            options = ", ".join(
                f"{docstring_text(k)}={docstring_text(_option(v))}" for k, v in self.network.items()
            )
            lines.append(f"Network options: {options}.")
            lines.append(
                "Scored and trained in a network with those options; this module is the layer alone."
            )
        return lines


def _option(value: Any) -> str:
    """A network option's value as in the config string (``true``, ``0.5``, ``post``)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _format(value: float | None) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.4g}"
