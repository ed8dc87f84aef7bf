"""Train one candidate over its seeds (and at the small batch size), merging with what is already stored.

A stored record is reused when it was trained with the same ``training`` settings (every field of
:class:`ConfirmSettings` that changes a run's numbers, see :data:`NOT_TRAINING`); then only seeds it lacks
are trained. Seeds are ``settings.seed + i`` for i < ``settings.seeds``. Summaries are over every stored
seed: ``accuracy`` = mean best validation accuracy, ``final_accuracy`` = mean last-epoch accuracy,
``diverged`` = some seed diverged, ``seconds`` = total wall time, ``images_per_s`` = mean throughput.
The small-batch retrain uses the same settings at ``small_batch`` (learning rate scaled linearly, see
:func:`normsearch.train.fit`); its ``drop`` = accuracy − small-batch accuracy (positive: worse when small).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from statistics import fmean
from typing import Any

from ..train import Progress, train
from .settings import ConfirmSettings

NOT_TRAINING = ("top_k", "baselines", "random", "seeds", "seed", "data_dir", "download", "device",
                "threads", "channels_last", "small_batch")
"""ConfirmSettings fields that choose candidates, seeds or hardware, not how a run is trained."""


def training_settings(settings: ConfirmSettings) -> dict[str, Any]:
    """The fields that define a run's numbers (a stored record is reused only if they match)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in NOT_TRAINING}


def seed_list(settings: ConfirmSettings) -> list[int]:
    return [settings.seed + i for i in range(settings.seeds)]


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summary numbers of per-seed records (see the module docstring)."""
    return {
        "accuracy": fmean(r["accuracy"] for r in runs),
        "final_accuracy": fmean(r["final_accuracy"] for r in runs),
        "diverged": any(r["diverged"] for r in runs),
        "seconds": sum(r["seconds"] for r in runs),
        "images_per_s": fmean(r["images_per_s"] for r in runs),
    }


def _missing(runs: Sequence[dict[str, Any]], seeds: Sequence[int]) -> list[int]:
    have = {r["seed"] for r in runs}
    return [s for s in seeds if s not in have]


def _run(config: str, settings: ConfirmSettings, seeds: Sequence[int], batch_size: int | None,
         progress: Callable[[int, int | None], Progress | None]) -> list[dict[str, Any]]:
    runs = []
    for seed in seeds:
        record = train(config, settings, seed=seed, batch_size=batch_size,
                       progress=progress(seed, batch_size)).to_dict()
        record.pop("spec")
        runs.append(record)
    return runs


def confirm_candidate(
    config: str,
    settings: ConfirmSettings,
    stored: dict[str, Any] | None,
    progress: Callable[[int, int | None], Progress | None] = lambda seed, batch: None,
) -> dict[str, Any] | None:
    """The candidate's updated record, or None when ``stored`` already holds everything asked for.

    ``progress(seed, batch_size)`` gives the callback for one run (batch_size None: the default batch).
    Raises ``ValueError`` when the config does not fit the network.
    """
    training = training_settings(settings)
    if stored is not None and stored.get("training") != training:
        stored = None
    seeds = seed_list(settings)
    runs = list(stored["seeds"]) if stored else []
    small = stored.get("small_batch") if stored else None
    if small is not None and small["batch_size"] != settings.small_batch:
        small = None
    todo = _missing(runs, seeds)
    small_todo = _missing(small["seeds"] if small else [], seeds) if settings.small_batch else []
    if not todo and not small_todo:
        return None
    runs += _run(config, settings, todo, None, progress)
    record = {"config": config, **summarize(runs), "training": training, "seeds": runs}
    small_runs = (small["seeds"] if small else []) + _run(config, settings, small_todo, settings.small_batch, progress)
    if small_runs:
        summary = summarize(small_runs)
        record["small_batch"] = {"batch_size": small_runs[0]["batch_size"], **summary,
                                 "drop": record["accuracy"] - summary["accuracy"], "seeds": small_runs}
    return record
