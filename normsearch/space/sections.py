"""The settings sections of a space file that are not another stage's own (``search:``), and how the
probe network follows the trained one (the ``probe:`` fields a file leaves out take the ``confirm:`` network's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..confirm.settings import ConfirmSettings
from ..data import NATIVE_RESOLUTION
from ..probes.settings import ProbeSettings, probe_reads
from ..settings import check_fields

SAMPLERS = ("tpe", "random", "nsga2", "brute_force")


@dataclass(frozen=True)
class SearchSettings:
    """The search loop: trial budget, sampler and which baselines are enqueued."""

    n_trials: int = field(
        default=30, metadata={"min": 1, "help": "trial budget of the study (resumes count)"}
    )
    timeout: float | None = field(default=None, metadata={"min": 0.0, "help": "seconds per run; null: none"})
    sampler: str = field(default="tpe", metadata={"choices": SAMPLERS, "help": "Optuna sampler"})
    seed: int = field(default=0, metadata={"min": 0, "help": "sampler seed (worker i uses seed + i)"})
    startup_trials: int = field(default=10, metadata={"min": 0, "help": "random trials before TPE models"})
    baselines: bool = field(default=True, metadata={"help": "enqueue the known layers inside the space"})

    def __post_init__(self) -> None:
        check_fields(self)


MATCHED = ("model", "depth", "width", "skipinit", "resolution", "data", "lr")
"""ProbeSettings fields that default to the confirmation's (:func:`matched_probe`)."""


def confirm_counterparts(confirm: ConfirmSettings) -> dict[str, Any]:
    """What each :data:`MATCHED` probe field is in the confirmation: its network, its resolution (the
    dataset's own when ``confirm.resolution`` is null), its dataset and its (peak) learning rate."""
    resolution = confirm.resolution or NATIVE_RESOLUTION.get(confirm.dataset)
    return {
        "model": confirm.model,
        "depth": confirm.depth,
        "width": confirm.width,
        "skipinit": confirm.skipinit,
        "resolution": resolution,
        "data": confirm.dataset,
        "lr": confirm.lr,
    }


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
    return {
        k: {"probe": getattr(probe, k), "confirm": v}
        for k, v in counterparts.items()
        if getattr(probe, k) != v
    }


__all__ = [
    "MATCHED",
    "SAMPLERS",
    "SearchSettings",
    "confirm_counterparts",
    "matched_probe",
    "probe_differences",
]
