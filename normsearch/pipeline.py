"""The pipeline as a library: space → probes → search → confirm → leaderboard / export, for Python callers.

    import normsearch
    study = normsearch.run("groups", model=my_net, data=(train, val), n_trials=20)
    study.leaderboard()[:3]        # rows as ``normsearch leaderboard --json`` has them
    study.winner                   # the NormConfig ranked first
    study.export("my_norm.py")     # the winner as standalone PyTorch code

``model`` is a model name (:mod:`normsearch.sources`) or a callable ``FUNC(norm_layer, num_classes) -> nn.Module``;
``data`` a dataset name (:mod:`normsearch.data`) or a pair of torch datasets (train, val). Both replace the
space's ``probe:`` and ``confirm:`` choices; with ``data`` the probes run at the data's own resolution.
In-memory callables and datasets exist in this process only: the study records their names, so a later
``normsearch`` command can show and export its results but not probe or train them again.

``normsearch run`` is this pipeline (:func:`run`) with progress bars, worker processes and Ctrl-C handling on top; both
apply command-line style overrides through :func:`with_overrides`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console
from torch import nn

from .data import load_data, register_data
from .export import Provenance, export_source
from .leaderboard import build_rows, sort_rows
from .norm import NormConfig, parse_spec
from .search import StopRequest, WorkerTask, optimize, prepare
from .settings import from_mapping
from .sources import register_model
from .space import SearchSpace, load_space
from .storage import check_name, locate, open_study


def with_overrides(
    space: SearchSpace,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    model: str | None = None,
    data: str | None = None,
    confirm: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """``space`` with the given search settings, model (probe and confirm), data (probe inputs at the data's
    resolution, and confirmation data at its own) and ``confirm:`` settings replaced; ``None`` keeps the
    space's. The probe settings the ``probe:`` section leaves out follow the new confirmation settings
    (:meth:`SearchSpace.with_confirm`). Invalid values raise :class:`~normsearch.settings.SettingsError`."""
    search = {"n_trials": n_trials, "timeout": timeout, "seed": seed}
    space = dataclasses.replace(
        space, search=dataclasses.replace(space.search, **{k: v for k, v in search.items() if v is not None})
    )
    confirm_settings = dataclasses.asdict(space.confirm)
    if model is not None:
        confirm_settings["model"] = model
    if data is not None:
        confirm_settings["dataset"], confirm_settings["resolution"] = data, None
    confirm_settings.update(confirm or {})
    space = space.with_confirm(from_mapping(type(space.confirm), confirm_settings, "confirm"))
    probe = dataclasses.asdict(space.probe)
    if model is not None:
        probe["model"] = model
    if data is not None:
        probe["data"], probe["resolution"] = data, load_data(data).resolution
    return dataclasses.replace(space, probe=from_mapping(type(space.probe), probe, "probe"))


@dataclass(frozen=True)
class Study:
    """A normsearch study: its leaderboard, winner and exports. ``optuna`` is the underlying Optuna study."""

    optuna: optuna.Study

    @classmethod
    def open(
        cls, name: str | None = None, *, runs_dir: str | Path = "runs", storage: str | None = None
    ) -> Study:
        """An existing study (default: the latest under ``runs_dir``); ``ValueError`` if there is none."""
        return cls(open_study(name, runs_dir, storage))

    @property
    def name(self) -> str:
        return self.optuna.study_name

    def leaderboard(self, *, sort: str = "trained", include_failed: bool = False) -> list[dict[str, Any]]:
        """The ranked rows (dicts as in ``normsearch leaderboard --json``), sorted by ``sort`` (default as the
        leaderboard: trained candidates first, best at the highest budget)."""
        return sort_rows(build_rows(self.optuna, include_failed=include_failed), sort)

    def _row(self, rank: int) -> dict[str, Any]:
        ranked = [row for row in build_rows(self.optuna) if row.get("rank") is not None]
        found = [row for row in ranked if row["rank"] == rank]
        if not found:
            raise ValueError(f"study {self.name!r} ranks {len(ranked)} trial(s); no rank {rank}")
        return found[0]

    @property
    def winner(self) -> NormConfig:
        """The config ranked first: the best trained candidate when any was trained, else the best score
        (what ``normsearch export`` picks by default)."""
        return parse_spec(self._row(1)["config"])

    def export(self, path: str | Path | None = None, *, rank: int = 1, class_name: str | None = None) -> str:
        """The standalone module of the config at ``rank`` (:func:`normsearch.export.export_source`, with
        this study as provenance); written to ``path`` when given. Returns the source."""
        row = self._row(rank)
        source = export_source(
            parse_spec(row["config"]), class_name=class_name, provenance=Provenance.from_row(self.name, row)
        )
        if path is not None:
            Path(path).write_text(source)
        return source


def run(
    space: str | Path | SearchSpace = "groups",
    *,
    model: str | Callable[..., nn.Module] | None = None,
    data: str | tuple[Any, Any] | None = None,
    study: str | None = None,
    storage: str | None = None,
    runs_dir: str | Path = "runs",
    n_trials: int | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    confirm: bool | Mapping[str, Any] = True,
    console: Console | None = None,
) -> Study:
    """Search ``space`` (a shipped name, a YAML path or a :class:`SearchSpace`) and return the :class:`Study`
    (named after ``normsearch run``; ``normsearch.search`` is the Optuna search module).

    Probes every drawn candidate on ``model`` with ``data`` (see the module docstring), then, unless
    ``confirm`` is false, trains the selected candidates (``confirm`` may be a mapping of ``confirm:``
    settings to change, e.g. ``{"epochs": 1, "top_k": 2}``). The study is ``study`` (default: the space's
    name) in ``storage`` (an Optuna URL or journal path; default ``runs_dir/NAME/journal.log``); calling
    again resumes it. Progress goes to ``console`` (default: none). Raises
    :class:`~normsearch.space.SpaceError`, :class:`~normsearch.settings.SettingsError` or ``ValueError``
    for bad input, :class:`~normsearch.search.IncompatibleStudy` for a study probed with other settings.
    """
    if not isinstance(space, SearchSpace):
        space = load_space(str(space))
    model_name = register_model(model) if callable(model) else model
    data_name = register_data(*data) if isinstance(data, tuple) else data
    space = with_overrides(
        space, n_trials=n_trials, timeout=timeout, seed=seed, model=model_name, data=data_name,
        confirm=confirm if isinstance(confirm, Mapping) else None,
    )  # fmt: skip
    location = locate(check_name(study or space.name), runs_dir, storage)
    prepared = prepare(space, location)
    budget = space.search.n_trials
    task = WorkerTask(space, location, budget, space.search.timeout, space.search.seed)
    optimize(task, StopRequest())
    if confirm is not False:
        from .confirm import confirm_study

        confirm_study(prepared.study, space.confirm, space=space, console=console or Console(quiet=True))
    return Study(prepared.study)


__all__ = ["Study", "run", "with_overrides"]
