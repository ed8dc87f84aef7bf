"""What a study stores, as typed records: the study's own attrs (:class:`StudyRecord`), what each probe trial
stores (:class:`TrialRecord`, its probe pass :class:`ProbeRecord`), and the leaderboard row built from them
(:class:`Row`). Every key of a search study's user attrs is a field name here, written once.

Schema: a study holds ``schema_version`` (:data:`SCHEMA_VERSION`); one without it was written before the
version was stored, in the same layout, and reads as version 1. A study of an unknown (newer) version is
refused by :func:`check_schema` with :class:`IncompatibleStudy`, on resume and on every read
(:func:`normsearch.storage.open_study`), so no command misreads it. Readers ignore keys they do not know.

Rows (:func:`probe_rows`): the first COMPLETE trial of each config stands for it (later samples of the same
config reuse its result and are counted in ``samples``). The four probe-score columns are the probes' own
values; ``objectives`` holds what the study minimises (:func:`~normsearch.score.objective_values`);
``pareto`` marks the stable, not rejected rows no other such row beats on all objectives (≤ on each, < on
one); ``rejected`` is the search filters' reason why a trial cannot train (None: it passes). The leaderboard
(:mod:`normsearch.leaderboard`) adds the confirmation to them and orders them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .candidate import split_candidate
from .score import OBJECTIVES, ScoreWeights

SCHEMA_VERSION = 2
"""The layout of the records below. Raise it when a stored key changes meaning or shape; readers refuse a
study of a higher version (:func:`check_schema`). Version 2: a trial's ``config`` may carry network options
(``LAYER_SPEC|name=value,...``, :class:`~normsearch.models.CandidateConfig`); version 1 configs are layer
specs alone, which read as candidates without network options."""
SCHEMA_KEY = "schema_version"
"""The study user attr that holds the schema version."""
PREPARED_KEY = "probe"
"""The study user attr that marks a prepared study: its creator stores it after every other key of
:class:`StudyRecord` (:meth:`StudyRecord.attrs`), so a process that sees it reads the whole record."""


class IncompatibleStudy(ValueError):
    """The study exists with settings or records whose scores would not compare with, or could not be read
    by, this normsearch."""


# ------------------------------------------------------------------------------------------------------
# The study


@dataclass(frozen=True)
class StudyRecord:
    """A search study's user attrs: what it was made with, so later commands work without the space file.

    ``normsearch``: the version that prepared it; ``space``: {name, path, sha256} of the space file;
    ``constraints``: the trial constraint names in stored order; ``probe`` / ``confirm`` / ``weights`` /
    ``search``: the space's settings sections as mappings; ``objectives`` and ``objectives_version``: what the
    study minimises (:mod:`normsearch.score`); ``probe_matches_confirm`` / ``probe_differs``: where the probe
    network differs from the trained one; ``schema_version``: :data:`SCHEMA_VERSION`.
    """

    normsearch: str
    space: dict[str, str]
    constraints: list[str]
    probe: dict[str, Any]
    confirm: dict[str, Any]
    weights: dict[str, float]
    search: dict[str, Any]
    objectives: list[str]
    objectives_version: int
    probe_matches_confirm: bool
    probe_differs: dict[str, dict[str, Any]]
    schema_version: int = SCHEMA_VERSION

    def attrs(self) -> dict[str, Any]:
        """The user attrs to store, key by key, in the order to store them: :data:`PREPARED_KEY` last. Each
        attr is its own write, and another process may read the study between two of them."""
        attrs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != PREPARED_KEY}
        return {**attrs, PREPARED_KEY: getattr(self, PREPARED_KEY)}


STUDY_FIELDS = frozenset(f.name for f in fields(StudyRecord))


def schema_version(study: optuna.Study) -> Any:
    """The schema version a study's records were written in (1 for a study from before it was stored)."""
    return study.user_attrs.get(SCHEMA_KEY, 1)


def check_schema(study: optuna.Study) -> None:
    """Raise :class:`IncompatibleStudy` (one line) unless this normsearch reads the study's records: a study
    with none of :class:`StudyRecord`'s keys was written by another program (a plain Optuna study)."""
    if not STUDY_FIELDS & set(study.user_attrs):
        raise IncompatibleStudy(
            f"study {study.study_name!r} was not written by normsearch (it has none of its settings): another "
            "program's study, left as it is; use another --study name"
        )
    version = schema_version(study)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        written = study.user_attrs.get("normsearch", "?")
        raise IncompatibleStudy(
            f"study {study.study_name!r} holds records of schema version {version!r} (written by normsearch "
            f"{written}); this normsearch reads versions 1 to {SCHEMA_VERSION}: read it with the normsearch "
            "that wrote it, or use another --study name"
        )


def stored_weights(study: optuna.Study) -> ScoreWeights:
    """The score weights the study stores (the defaults for a study without them)."""
    stored = study.user_attrs.get("weights")
    return ScoreWeights(**stored) if isinstance(stored, dict) else ScoreWeights()


# ------------------------------------------------------------------------------------------------------
# One trial


@dataclass(frozen=True)
class ProbeRecord:
    """A trial's ``probe`` attr: the probe scores (means over seeds) and their stds at 4 significant digits,
    ``unstable`` and its ``reason``, the probe ``seeds``, the number of probed ``blocks`` B and the mean
    ``curves`` ({variance, similarity, grad_norm}: lists, 4 significant digits)."""

    activation_growth: float
    similarity: float
    grad_ratio: float
    step_loss_ratio: float
    activation_growth_std: float
    similarity_std: float
    grad_ratio_std: float
    step_loss_ratio_std: float
    unstable: bool
    reason: str | None
    seeds: int
    blocks: int
    curves: dict[str, list[float]]

    @classmethod
    def of(cls, result: Any) -> ProbeRecord:
        """The record of a :class:`~normsearch.probes.ProbeResult`."""
        return cls(
            **{name: getattr(result, name) for name in SCORE_NAMES},
            **{f"{name}_std": _round(getattr(result, f"{name}_std")) for name in SCORE_NAMES},
            unstable=result.unstable,
            reason=result.reason,
            seeds=result.seeds,
            blocks=len(result.curves.get("variance", [])),
            curves={key: [_round(v) for v in values] for key, values in result.curves.items()},
        )

    @classmethod
    def read(cls, attr: Mapping[str, Any]) -> ProbeRecord:
        """The record from a stored ``probe`` attr (unknown keys ignored)."""
        return cls(**{f.name: attr[f.name] for f in fields(cls)})

    def attr(self) -> dict[str, Any]:
        """The mapping stored as the ``probe`` attr."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


SCORE_NAMES = ("activation_growth", "similarity", "grad_ratio", "step_loss_ratio")
"""The probe scores of a :class:`ProbeRecord`, in the probes' order (:data:`normsearch.probes.SCORES`)."""


def _round(value: float) -> float:
    return float(f"{value:.4g}")


@dataclass(frozen=True)
class TrialRecord:
    """A search trial's user attrs; a field that was not written reads as its default.

    Written as the trial runs: ``worker`` (``host:pid``), ``baseline`` / ``baseline_name`` (an enqueued known
    layer), ``config`` (the canonical candidate string: layer spec and network options, or the drawn options
    when they contradict), ``probing`` (holds the claim to probe ``config``), ``duplicate_of`` (the trial
    whose result it reuses); once scored:
    ``probe`` (:class:`ProbeRecord` as a mapping), ``seconds``, ``score`` and ``rejected``; when it fails:
    ``fail_reason``, with ``interrupted`` when that was not the candidate's fault; ``surplus``: pruned as
    one too many for the budget.
    """

    worker: str | None = None
    baseline: bool = False
    baseline_name: str | None = None
    config: str | None = None
    probing: bool = False
    duplicate_of: int | None = None
    probe: dict[str, Any] | None = None
    seconds: float | None = None
    score: float | None = None
    rejected: str | None = None
    fail_reason: str | None = None
    interrupted: bool = False
    surplus: bool = False

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        """The record of a trial (keys it does not know left out)."""
        attrs = trial.user_attrs
        return cls(**{f.name: attrs[f.name] for f in fields(cls) if f.name in attrs})


TRIAL_FIELDS = frozenset(f.name for f in fields(TrialRecord))


def trial_attrs(**values: Any) -> dict[str, Any]:
    """User attrs of fields of a :class:`TrialRecord`, in the order given (a :class:`ProbeRecord` as its
    mapping); ``TypeError`` for a name that is not a field, so no key is stored that readers do not know."""
    unknown = set(values) - TRIAL_FIELDS
    if unknown:
        raise TypeError(f"not a trial record field: {', '.join(sorted(unknown))}")
    return {key: value.attr() if isinstance(value, ProbeRecord) else value for key, value in values.items()}


def write(set_attr: Callable[[str, Any], None], **values: Any) -> None:
    """Store fields of a :class:`TrialRecord` (:func:`trial_attrs`) with ``set_attr(key, value)``, e.g.
    ``trial.set_user_attr``."""
    for key, value in trial_attrs(**values).items():
        set_attr(key, value)


def trial_score(trial: FrozenTrial, weights: ScoreWeights) -> float:
    """The scalar score of a COMPLETE trial: :meth:`~normsearch.score.ScoreWeights.score` of its probe record."""
    probe = trial.user_attrs["probe"]
    return weights.score(probe, blocks=probe["blocks"])


# ------------------------------------------------------------------------------------------------------
# Leaderboard rows


@dataclass
class Row:
    """One leaderboard row: a config's standing trial. ``state``: COMPLETE, UNSTABLE (a complete trial whose
    probe pass was unstable) or FAIL; ``objectives`` ({name: value}) and the ``*_std`` columns (``stds``)
    only for scored rows. :meth:`as_dict` is the row as every consumer (tables, ``--json``, confirmation)
    reads it, in this key order: :data:`ROW_KEYS` first."""

    trial: int
    config: str
    baseline: bool
    state: str
    scores: dict[str, float | None]
    score: float | None
    rejected: str | None
    baseline_name: str | None
    unstable: bool
    reason: str | None
    samples: int
    seconds: float | None
    params: dict[str, Any]
    objectives: dict[str, float] | None = None
    stds: dict[str, float | None] | None = None
    pareto: bool = False
    rank: int = 0

    @property
    def network(self) -> dict[str, Any]:
        """The network options of the row's config (:func:`~normsearch.models.split_candidate`)."""
        try:
            return split_candidate(self.config)[1]
        except ValueError:  # a failed trial's drawn options
            return {}

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "rank": self.rank,
            "trial": self.trial,
            "config": self.config,
            "baseline": self.baseline,
            "pareto": self.pareto,
            "state": self.state,
            **self.scores,
            "score": self.score,
            "rejected": self.rejected,
        }
        if self.objectives is not None:
            row["objectives"] = self.objectives
        row.update(
            baseline_name=self.baseline_name,
            unstable=self.unstable,
            reason=self.reason,
            samples=self.samples,
            seconds=self.seconds,
            params=self.params,
            network=self.network,
        )
        if self.stds is not None:
            row.update({f"{name}_std": value for name, value in self.stds.items()})
        return row


ROW_KEYS = ("rank", "trial", "config", "baseline", "pareto", "state", *SCORE_NAMES, "score", "rejected")
"""Keys every row has (the ``--json`` contract); more follow them."""


def complete_row(trial: FrozenTrial, samples: Sequence[FrozenTrial], weights: ScoreWeights) -> Row:
    """The row of a COMPLETE trial standing for ``samples`` (every COMPLETE trial of its config)."""
    record = TrialRecord.of(trial)
    probe = record.probe or {}
    unstable = bool(probe.get("unstable", False))
    baseline = next((r.baseline_name for r in map(TrialRecord.of, samples) if r.baseline), None)
    return Row(
        trial=trial.number,
        config=record.config or "",
        baseline=baseline is not None,
        state="UNSTABLE" if unstable else "COMPLETE",
        scores={name: probe.get(name) for name in SCORE_NAMES},
        score=trial_score(trial, weights),
        rejected=record.rejected,
        objectives=dict(zip(OBJECTIVES, trial.values, strict=True)),
        baseline_name=baseline,
        unstable=unstable,
        reason=probe.get("reason"),
        samples=len(samples),
        seconds=record.seconds,
        params=trial.params,
        stds={name: probe.get(f"{name}_std") for name in SCORE_NAMES},
    )


def failed_row(trial: FrozenTrial) -> Row:
    """The row of a FAIL trial: no scores, its ``fail_reason`` as the reason."""
    record = TrialRecord.of(trial)
    return Row(
        trial=trial.number,
        config=record.config or "",
        baseline=record.baseline,
        state="FAIL",
        scores=dict.fromkeys(SCORE_NAMES),
        score=None,
        rejected=None,
        baseline_name=record.baseline_name,
        unstable=False,
        reason=record.fail_reason or "failed (no reason recorded)",
        samples=1,
        seconds=record.seconds,
        params=trial.params,
    )


def pareto_mask(points: Sequence[Sequence[float]]) -> list[bool]:
    """For points to minimise, whether each is non-dominated (no other ≤ on all and < on one)."""

    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and any(
            x < y for x, y in zip(a, b, strict=True)
        )

    return [not any(dominates(q, p) for q in points if q is not p) for p in points]


def probe_rows(study: optuna.Study, *, include_failed: bool = False) -> list[Row]:
    """The study's rows (see the module docstring) in trial order, FAIL trials' rows last with
    ``include_failed``; unranked (``rank`` 0)."""
    weights = stored_weights(study)
    trials = study.get_trials(deepcopy=False)
    by_config: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            by_config.setdefault(TrialRecord.of(trial).config or f"#{trial.number}", []).append(trial)
    rows = [complete_row(samples[0], samples, weights) for samples in by_config.values()]
    stable = [row for row in rows if not row.unstable and row.rejected is None]
    front = pareto_mask([list(row.objectives.values()) for row in stable])
    for row, on_front in zip(stable, front, strict=True):
        row.pareto = on_front
    if include_failed:
        rows += [failed_row(t) for t in trials if t.state == TrialState.FAIL]
    return rows


__all__ = [
    "PREPARED_KEY",
    "ROW_KEYS",
    "SCHEMA_KEY",
    "SCHEMA_VERSION",
    "SCORE_NAMES",
    "STUDY_FIELDS",
    "IncompatibleStudy",
    "ProbeRecord",
    "Row",
    "StudyRecord",
    "TrialRecord",
    "check_schema",
    "complete_row",
    "failed_row",
    "pareto_mask",
    "probe_rows",
    "schema_version",
    "stored_weights",
    "trial_attrs",
    "trial_score",
    "write",
]
