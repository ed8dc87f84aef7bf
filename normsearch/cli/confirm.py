"""``normsearch confirm STUDY``: multi-fidelity training of a study's candidates (``--all``: every config at
the final budget); ``normsearch calibrate``: probe and train a whole space (every preset of ``classic.yaml``
by default) and report how well the probes predict training.

Both take the study's (or space's) ``confirm:`` settings and override them with the flags given. Tables
and ``--json`` go to stdout, training progress to stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any

import optuna
import torch
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..allocator import keep_freed_memory
from ..confirm import all_candidates, confirm_study, cost_line, load_confirmation, training_cost
from ..confirm.calibration import QUANTITIES, calibrate, where
from ..confirm.settings import ConfirmSettings
from ..data import DatasetUnavailable
from ..failures import describe_failure
from ..leaderboard import build_rows, outcome, winner
from ..pipeline import Interrupted, Reporter, search_and_confirm
from ..search import IncompatibleStudy, check_comparable
from ..settings import SettingsError, from_mapping
from ..sources import ModelUnavailable, network_label
from ..space import SpaceError, load_space
from ..storage import HEARTBEAT_S, StorageError, check_name, locate, open_study, worker_id
from ..train import resolve_device
from .app import command, emit, fail, open_study_or_fail, output_width, setting_option, stderr
from .tables import collapse_line, default_line, margin_line, mark_winner, results_table, winner_line

INTERRUPTED = 130
_FIELDS = {f.name for f in dataclasses.fields(ConfirmSettings)}
"""The settings fields, each also a flag (overriding the study's or space's ``confirm:`` value)."""


def _field_help(name: str) -> str:
    return next(f.metadata.get("help", "") for f in dataclasses.fields(ConfirmSettings) if f.name == name)


def _flag(name: str, *decls: str, **kwargs: Any) -> Any:
    return setting_option(ConfirmSettings, name, *decls, **kwargs)


TopK = Annotated[int | None, _flag("top_k", min=0)]
Explore = Annotated[int | None, _flag("explore", min=0)]
MinEpochs = Annotated[int | None, _flag("min_epochs")]
Eta = Annotated[int | None, _flag("eta")]
LrFactors = Annotated[
    str | None,
    typer.Option(
        "--lr-factors", metavar="F,F,...", help=f"{_field_help('lr_factors')} (comma-separated, e.g. 1,0.25)"
    ),
]
Random = Annotated[int | None, _flag("random", min=0)]
Baselines = Annotated[bool | None, _flag("baselines", "--baselines/--no-baselines")]
Dataset = Annotated[str | None, _flag("dataset")]
DataDir = Annotated[str | None, _flag("data_dir")]
Download = Annotated[bool | None, _flag("download", "--download/--no-download")]
Model = Annotated[str | None, _flag("model")]
Depth = Annotated[int | None, _flag("depth")]
Width = Annotated[int | None, _flag("width")]
Augment = Annotated[str | None, _flag("augment")]
Epochs = Annotated[int | None, _flag("epochs")]
Steps = Annotated[int | None, _flag("steps")]
BatchSize = Annotated[int | None, _flag("batch_size")]
Optimizer = Annotated[str | None, _flag("optimizer")]
Lr = Annotated[float | None, _flag("lr")]
Schedule = Annotated[str | None, _flag("schedule")]
Seeds = Annotated[int | None, _flag("seeds")]
Seed = Annotated[int | None, _flag("seed")]
Device = Annotated[str | None, _flag("device")]
Threads = Annotated[int | None, _flag("threads", min=1, max=os.cpu_count() or 1)]  # more: torch fails
Amp = Annotated[bool | None, _flag("amp", "--amp/--no-amp")]
Compile = Annotated[bool | None, _flag("compile", "--compile/--no-compile")]
SmallBatch = Annotated[int | None, _flag("small_batch")]
RunsDir = Annotated[str, typer.Option("--runs-dir", metavar="DIR", help="Where studies live.")]
Storage = Annotated[
    str | None, typer.Option("--storage", metavar="URL|PATH", help="Optuna storage URL or journal file path.")
]
JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print one JSON document {study, settings, rows, ...}.")
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        metavar="N",
        help="Local processes sharing the runs (through the storage: each claims waiting runs); default 1.",
    ),
]
Devices = Annotated[
    str | None,
    typer.Option(
        "--devices",
        metavar="D,D,...",
        help="One worker per device, each training on its own: e.g. cuda:0,cuda:1 (cpu,cpu: two on the CPU).",
    ),
]
Heartbeat = Annotated[
    int,
    typer.Option(
        "--heartbeat",
        min=1,
        metavar="S",
        help="RDB storages: a run silent for "
        "2×S seconds (its machine died or hangs) is failed and trained again.",
    ),
]
DEVICES = "cpu, cuda, cuda:N"


def _factors(text: str) -> list[Any]:
    """``--lr-factors 1,0.25`` → [1.0, 0.25] (a part that is not a number is kept, for the settings check)."""

    def number(part: str) -> Any:
        try:
            return float(part)
        except ValueError:
            return part

    return [number(part.strip()) for part in text.split(",") if part.strip()]


def confirm_settings(stored: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> ConfirmSettings:
    """Stored settings (unknown keys ignored) updated with the flags given; exit 2 naming a bad one."""
    known = {f.name for f in dataclasses.fields(ConfirmSettings)}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "lr_factors" in given:
        given["lr_factors"] = _factors(given["lr_factors"])
    merged = {k: v for k, v in (stored or {}).items() if k in known} | given
    try:
        settings = from_mapping(ConfirmSettings, merged)
        resolve_device(settings.device)
    except SettingsError as err:
        field = err.path.split("[")[0]
        where = f"--{err.path.replace('_', '-')}" if field in given else f"stored confirm.{err.path}"
        fail(f"{where}: {err.message}")
    except RuntimeError as err:
        fail(f"--device: {err}")
    return settings


def _confirm(
    study: optuna.Study,
    settings: ConfirmSettings,
    exhaustive: bool = False,
    helpers: Sequence[Any] = (),
) -> None:
    """Confirm in this process; ``helpers``: started worker processes doing the same, joined at the end."""
    try:
        confirm_study(study, settings, console=stderr, exhaustive=exhaustive)
    except (DatasetUnavailable, ModelUnavailable) as err:
        fail(str(err))
    except KeyboardInterrupt:
        for process in helpers:
            process.terminate()  # their runs are left RUNNING; the next confirmation queues them again
        stderr.print("interrupted: the runs finished so far are stored; run again to go on", highlight=False)
        raise typer.Exit(INTERRUPTED) from None
    for process in helpers:
        process.join()


def device_list(text: str) -> list[str]:
    """``--devices cuda:0,cuda:1`` → its devices, each one this machine has (cpu, cuda = the current CUDA
    device, cuda:N); one ``error:`` line naming the first bad one otherwise."""
    devices = [part.strip() for part in text.split(",")]
    for name in devices:
        try:
            device = torch.device(name)
        except RuntimeError:
            device = None
        if (
            device is None
            or device.type not in ("cpu", "cuda")
            or (device.type == "cpu" and device.index is not None)
        ):
            fail(f"--devices: {name!r} is not a training device; allowed: {DEVICES}")
        count = torch.cuda.device_count() if device.type == "cuda" else 1
        if (device.index or 0) >= count:
            have = f"cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
            fail(f"--devices: {name}: not on this machine, which has {have}; allowed: {DEVICES}")
    return devices


def on_device(settings: ConfirmSettings, name: str | None) -> ConfirmSettings:
    """The settings of a worker training on device ``name`` (from :func:`device_list`; None: ``settings.device``):
    ``cuda:N`` becomes this process's current CUDA device, which device ``cuda`` then means."""
    if name is None:
        return settings
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return dataclasses.replace(settings, device=device.type)


def _worker(
    name: str,
    runs_dir: str,
    storage: str | None,
    heartbeat: int,
    settings: ConfirmSettings,
    exhaustive: bool,
    device: str | None,
) -> None:
    """A spawned ``--workers`` process: the same confirmation, quietly, on ``device``; the units it claims are
    its share. An expected failure (a full disk, a storage error) is one line naming the worker, and exit 2:
    its unit is queued again by the others. The allocator keeps freed memory (:mod:`normsearch.allocator`)."""
    keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        confirm_study(
            open_study(name, runs_dir, storage, heartbeat),
            on_device(settings, device),
            console=Console(file=io.StringIO()),
            exhaustive=exhaustive,
        )
    except (DatasetUnavailable, ModelUnavailable):  # the parent reports it
        return
    except Exception as err:
        message = describe_failure(err)
        if message is None:
            raise
        print(f"error: worker {worker_id()}{f' on {device}' if device else ''}: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _start_workers(devices: Sequence[str | None], *args: Any) -> list[Any]:
    """One spawned :func:`_worker` per entry of ``devices`` (None: the settings' device)."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(*args, device)) for device in devices]
    for process in processes:
        process.start()
    return processes


def _worker_devices(workers: int | None, devices: str | None, device: str | None) -> list[str | None]:
    """The device of each worker of ``--workers`` / ``--devices`` (the first: this process); exit 2 when they
    disagree."""
    if devices is None:
        return [None] * (workers or 1)
    if device is not None:
        fail("--device and --devices: give one (--devices runs one worker per device)")
    names = device_list(devices)
    if workers is not None and workers != len(names):
        fail(
            f"--workers {workers} and --devices {devices} ({len(names)} devices) disagree: --devices runs one "
            "worker per device; leave --workers out"
        )
    return list(names)


def calibration_table(calibration: Mapping[str, Any]) -> Table:
    """Spearman ρ and Kendall τ of each probe quantity against accuracy (+1: ranks exactly as training), and of
    one training seed against another (the ceiling) when there are several seeds."""
    grid = Table(
        title=f"calibration against accuracy {where(calibration)}; +1: same order",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name in ("probe quantity", "Spearman ρ", "Kendall τ", "n"):
        grid.add_column(name, justify="left" if name == "probe quantity" else "right")
    seeds = calibration["seeds"]
    named = [(name, calibration[name]) for name in QUANTITIES]
    for name, c in named + ([("seed to seed (ceiling)", seeds)] if seeds["pairs"] else []):
        grid.add_row(
            name, *("n/a" if c[k] is None else f"{c[k]:+.2f}" for k in ("spearman", "kendall")), str(c["n"])
        )
    return grid


def _print(study: optuna.Study, settings: ConfirmSettings, json_output: bool) -> None:
    confirmation = load_confirmation(study)
    rows = build_rows(study, confirmation=confirmation)
    trained = [row for row in rows if "confirm" in row]
    calibration = calibrate(rows, {row["trial"]: row["confirm"] for row in trained})
    best = winner(rows)
    cost = training_cost(confirmation, len(all_candidates(rows, settings.default)))
    default = outcome(study, rows)["default"]
    if json_output:
        doc = {
            "study": study.study_name,
            "settings": dataclasses.asdict(settings),
            "rows": trained,
            "calibration": calibration,
            "winner": best,
            "training_cost": cost,
            "default": default,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    title = (
        f"confirmation of {study.study_name}: {settings.dataset}, "
        f"{network_label(settings.model, settings.depth, settings.width)}, up to {settings.epochs} epochs, "
        f"batch {settings.batch_size}"
    )
    emit(results_table(title, mark_winner(trained, best), width=output_width()))
    if calibration["budget"] is not None:
        emit(calibration_table(calibration))
    lines = [
        winner_line(best),
        default_line(best, default),
        margin_line(trained, best),
        collapse_line(trained),
        cost_line(cost),
    ]
    for line in filter(None, lines):
        emit(Text(line))  # wrapped at words on a terminal, whole lines off it


@command("confirm", resumes=True, epilog="Example: `normsearch confirm groups --top-k 5 --seeds 3`")
def confirm_command(
    study_name: Annotated[
        str | None, typer.Argument(metavar="STUDY", help="Study (default: the latest).")
    ] = None,
    every: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Train every config at every lr for the final budget "
            "(what exhaustive search costs); gives the exact calibration.",
        ),
    ] = False,
    top_k: TopK = None,
    explore: Explore = None,
    min_epochs: MinEpochs = None,
    eta: Eta = None,
    lr_factors: LrFactors = None,
    random: Random = None,
    baselines: Baselines = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    download: Download = None,
    model: Model = None,
    depth: Depth = None,
    width: Width = None,
    augment: Augment = None,
    epochs: Epochs = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    optimizer: Optimizer = None,
    lr: Lr = None,
    schedule: Schedule = None,
    seeds: Seeds = None,
    seed: Seed = None,
    device: Device = None,
    threads: Threads = None,
    amp: Amp = None,
    compile: Compile = None,
    small_batch: SmallBatch = None,
    runs_dir: RunsDir = "runs",
    storage: Storage = None,
    workers: Workers = None,
    devices: Devices = None,
    heartbeat: Heartbeat = HEARTBEAT_S,
    json_output: JsonOutput = False,
) -> None:
    """Train a study's candidates rung by rung (top-k by score, Pareto-front explorers, baselines, random
    extras; the best 1/eta advance to the next budget), name the winner and calibrate the probes.

    Settings: the study's `confirm:` section, overridden by the flags. Runs already stored for the same
    training settings are reused, so running it again only adds what is missing (e.g. more seeds). Any number
    of such processes, here or on other machines, share the runs through the storage (docs/distributed.md).
    """
    overrides = {k: v for k, v in locals().items() if k in _FIELDS}
    first, *others = _worker_devices(workers, devices, device)
    study = open_study_or_fail(study_name, runs_dir, storage, heartbeat)
    try:
        check_comparable(study)
    except IncompatibleStudy as err:
        fail(str(err))
    settings = confirm_settings(study.user_attrs.get("confirm"), overrides)
    helpers = _start_workers(others, study.study_name, runs_dir, storage, heartbeat, settings, every)
    _confirm(study, on_device(settings, first), exhaustive=every, helpers=helpers)
    _print(study, settings, json_output)


class _Calibration(Reporter):
    """``normsearch calibrate``'s progress: one line before probing, naming the study (the training prints
    its own)."""

    @contextlib.contextmanager
    def searching(self, study: optuna.Study, budget: int, remaining: int) -> Iterator[Callable[[], None]]:
        if remaining > 0:
            stderr.print(f"calibrate {study.study_name}: probing {remaining} candidates", highlight=False)
        yield lambda: None


@command("calibrate", resumes=True, epilog="Example: `normsearch calibrate --space classic --epochs 3`")
def calibrate_command(
    space_path: Annotated[
        str, typer.Option("--space", metavar="FILE", help="Space file or shipped name.")
    ] = "classic",
    study_name: Annotated[
        str | None, typer.Option("--study", metavar="NAME", help="Study (default: SPACE-calibration).")
    ] = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    download: Download = None,
    model: Model = None,
    depth: Depth = None,
    width: Width = None,
    augment: Augment = None,
    epochs: Epochs = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    optimizer: Optimizer = None,
    lr: Lr = None,
    lr_factors: LrFactors = None,
    schedule: Schedule = None,
    seeds: Seeds = None,
    seed: Seed = None,
    device: Device = None,
    threads: Threads = None,
    amp: Amp = None,
    compile: Compile = None,
    small_batch: SmallBatch = None,
    runs_dir: RunsDir = "runs",
    storage: Storage = None,
    json_output: JsonOutput = False,
) -> None:
    """Probe and train every candidate of a space (all presets of classic.yaml) for the final budget at every
    learning rate, then print both side by side with the rank correlation of each probe score against
    trained accuracy.

    The study is kept under the runs directory: running it again reuses the probes and the trained runs.
    """
    overrides = {k: v for k, v in locals().items() if k in _FIELDS}
    try:
        space = load_space(space_path)
    except SpaceError as err:
        fail(err.problems[0])
    try:
        location = locate(check_name(study_name or f"{space.name}-calibration"), runs_dir, storage)
    except ValueError as err:
        fail(f"--study: {err}")
    base = dataclasses.asdict(space.confirm) | {"baselines": True, "random": 0}
    settings = confirm_settings(base, overrides)
    try:
        space = space.with_confirm(settings)  # the probes follow the trained network and lr, as at load
    except SettingsError as err:
        fail(f"probe.{err.path}: {err.message} (from the confirm flags)")
    try:
        study = search_and_confirm(space, location, exhaustive=True, reporter=_Calibration(), console=stderr)
    except SettingsError as err:  # the confirmation data is missing
        fail(err.message)
    except (IncompatibleStudy, StorageError) as err:
        fail(str(err))
    except Interrupted as err:
        what = "probes" if err.stage == "search" else "runs finished"
        stderr.print(f"interrupted: the {what} so far are stored; run again to go on", highlight=False)
        raise typer.Exit(INTERRUPTED) from None
    _print(study, settings, json_output)
