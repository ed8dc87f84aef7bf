"""The settings sections of a space file that are not another stage's own (``search:``), and how the
probe network follows the trained one (the ``probe:`` fields a file leaves out take the ``confirm:`` network's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..confirm.settings import ConfirmSettings
from ..data import NATIVE_RESOLUTION
from ..probes.inputs import probe_task
from ..probes.settings import MAX_BATCH, ProbeSettings, probe_reads
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


MATCHED = ("model", "depth", "width", "skipinit", "resolution", "data", "lr", "batch_size")
"""ProbeSettings fields that default to the confirmation's (:func:`matched_probe`): every training setting
that changes a probe score. The batch changes them all (BatchNorm's statistics, the similarity's sample
pairs, the one-step probe's gradient); what else training sets is either the probes' own choice (seeds)
or does not reach an init-time pass, except the optimizer (the probe task's ``step_optimizer``, :mod:`normsearch.task`)."""


def confirm_counterparts(confirm: ConfirmSettings) -> dict[str, Any]:
    """What each :data:`MATCHED` probe field is in the confirmation: its network, its resolution (the
    dataset's own when ``confirm.resolution`` is null), its dataset, its (peak) learning rate and its batch."""
    resolution = confirm.resolution or NATIVE_RESOLUTION.get(confirm.dataset)
    return {
        "model": confirm.model,
        "depth": confirm.depth,
        "width": confirm.width,
        "skipinit": confirm.skipinit,
        "resolution": resolution,
        "data": confirm.dataset,
        "lr": confirm.lr,
        "batch_size": confirm.batch_size,
    }


def _probe_can_take(key: str, value: Any) -> bool:
    """Whether a probe field can be set to the confirmation's value: data the probes read themselves, a
    batch of 2 to MAX_BATCH (a batch of one has no statistics across samples to probe)."""
    if key == "data":
        return probe_reads(value)
    if key == "batch_size":
        return 2 <= value <= MAX_BATCH
    return True


def matched_probe(confirm: ConfirmSettings) -> dict[str, Any]:
    """The defaults of a space's probe settings: the confirmation network (model, depth, width, skipinit),
    its input resolution, learning rate and batch size (when 2 to MAX_BATCH), and its data when the probes
    can read it (digits, and data that needs no ``data_dir``:
    :func:`~normsearch.probes.settings.probe_reads`). A field the ``probe:`` section gives overrides these;
    :func:`probe_differences` then lists it."""
    counterparts = confirm_counterparts(confirm)
    return {k: v for k, v in counterparts.items() if v is not None and _probe_can_take(k, v)}


def probe_differences(probe: ProbeSettings, confirm: ConfirmSettings) -> dict[str, dict[str, Any]]:
    """``{field: {"probe": value, "confirm": value}}`` for each :data:`MATCHED` field where the probe
    network or inputs differ from what confirmation trains, and ``optimizer`` when training does not use
    the step probe's optimizer (the probe task's ``step_optimizer``: SGD for images, AdamW for text; empty: the probes see the trained network, batch and step;
    ``probe_matches_confirm`` is true only then)."""
    task = probe_task(probe)
    counterparts = confirm_counterparts(confirm)
    if not task.image_inputs:  # text windows have no resolution
        counterparts.pop("resolution", None)
    out = {
        k: {"probe": getattr(probe, k), "confirm": v}
        for k, v in counterparts.items()
        if getattr(probe, k) != v
    }
    if confirm.optimizer != task.step_optimizer:
        out["optimizer"] = {"probe": task.step_optimizer, "confirm": confirm.optimizer}
    return out


__all__ = [
    "MATCHED",
    "SAMPLERS",
    "SearchSettings",
    "confirm_counterparts",
    "matched_probe",
    "probe_differences",
]
