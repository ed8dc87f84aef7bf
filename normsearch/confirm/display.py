"""Progress of the confirmation on a (stderr) console: live bars on a terminal, a line per run everywhere.

Each rung starts with a line (its epochs and how many runs it holds); each run this process trains ends
with one line: its place in the rung (``3/22``), config, learning rate, seed (and batch), accuracy with
``diverged`` / ``collapsed`` flags, time, and the rung's ETA (its runs left × the mean time of the runs
this process trained in it; runs stored earlier or trained by other workers make it an overestimate).
On a terminal two bars are drawn: the rung's runs done/total with that ETA, and the current run's steps
(epoch, running training loss, last validation accuracy). Every line is wrapped at spaces
(:func:`say`), so a number is never split across two lines.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Self

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column
from rich.text import Text

from ..train import TrainProgress
from .results import metric_of
from .units import Unit


def say(console: Console, text: str | Text) -> None:
    """One message, wrapped at spaces to the console's width (a terminal); whole off a terminal."""
    console.print(text, highlight=False, markup=False, soft_wrap=not console.is_terminal)


def clock(seconds: float) -> str:
    """``1:05`` (minutes:seconds), ``1:02:05`` past an hour."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainingDisplay:
    """A context manager: progress bars while units train, and the result lines (see the module docstring).

    ``name`` (the study's) starts the rung lines and the rung bar."""

    def __init__(self, console: Console, name: str) -> None:
        self.console = console
        self.name = name
        self._tasks: list[Any] = []
        self.rung = ""
        self._rung_task: Any = None
        self._total = 0
        self._done = 0
        self._seconds = 0.0
        self._start = 0.0
        self.progress = Progress(
            TextColumn(
                "{task.description}",
                markup=False,
                table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"),
            ),
            BarColumn(bar_width=12),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}", markup=False, table_column=Column(no_wrap=True)),
            console=console,
            transient=True,
            expand=True,
            disable=not console.is_terminal,
        )

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.progress.stop()

    def eta(self) -> str:
        """The rung's time left, ``eta 1:05`` (empty before the first run ends)."""
        if not self._done:
            return ""
        left = max(0, self._total - self._done) * self._seconds / self._done
        return f"eta {clock(left)}"

    def rung_started(self, index: int, rungs: int, epochs: int, units: list[Unit]) -> None:
        self.rung = f"rung {index + 1}/{rungs}"
        arms = len({(u.config, u.lr) for u in units})
        self._total, self._done, self._seconds = len(units), 0, 0.0
        say(
            self.console,
            f"confirm {self.name} {self.rung}: {epochs} epoch(s), {arms} candidate × learning-rate arm(s), "
            f"{len(units)} run(s)",
        )
        if self._rung_task is not None:
            self.progress.remove_task(self._rung_task)
        self._rung_task = self.progress.add_task(f"{self.name} {self.rung} runs", total=len(units), info="")

    @staticmethod
    def _label(unit: Unit) -> str:
        batch = f" batch {unit.batch_size}" if unit.batch_size else ""
        return f"{unit.config} lr {unit.lr:g} seed {unit.seed}{batch}"

    def started(self, unit: Unit):
        """The progress callback of one run."""
        self._start = time.perf_counter()
        task = self.progress.add_task(self._label(unit), total=None, info="")
        self._tasks.append(task)

        def update(event: TrainProgress) -> None:
            acc = "" if event.val_accuracy is None else f" val {event.val_accuracy:.3f}"
            self.progress.update(
                task,
                completed=event.step,
                total=event.total_steps,
                info=f"ep {event.epoch}/{event.epochs} loss {event.train_loss:.3f}{acc}",
            )

        return update

    def finished(self, unit: Unit, trial: FrozenTrial) -> None:
        """One line: the run's place in the rung, accuracy and flags (or why it failed), the rung's ETA."""
        while self._tasks:
            self.progress.remove_task(self._tasks.pop())
        self._done += 1
        self._seconds += time.perf_counter() - self._start
        eta = self.eta()
        if self._rung_task is not None:
            self.progress.update(self._rung_task, completed=min(self._done, self._total), info=eta)
        line = Text(f"  {self._done}/{self._total} {self._label(unit)}, {unit.epochs} ep: ")
        if trial.state != TrialState.COMPLETE:
            line.append(f"skipped: {trial.user_attrs.get('fail_reason')}")
        else:
            run = trial.user_attrs["run"]
            metric, _ = metric_of(run)
            line.append(f"{metric} {run.get('value', run.get(metric)):.3f}")
            for flag in ("diverged", "collapsed"):
                if run.get(flag):
                    line.append(f" {flag}", style="bold red")
            line.append(f" · {run['seconds']:.1f} s · {run['images_per_s']:.0f} img/s")
        if eta and self._done < self._total:
            line.append(f" · {eta}")
        say(self.console, line)
