"""Progress of the confirmation on a (stderr) console: a live bar per run on a terminal, a line per run.

Each rung starts with a line (its epochs and how many runs it holds); each run this process trains ends
with one line: config, learning rate, seed (and batch), accuracy with ``diverged`` / ``collapsed`` flags,
time. The bar (epoch, running training loss, last validation accuracy) is drawn only on a terminal.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..train import TrainProgress
from .units import Unit


class TrainingDisplay:
    """A context manager: progress bars while units train, and the result lines (see the module docstring)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._tasks: list[Any] = []
        self.rung = ""
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]} · loss {task.fields[loss]} · acc {task.fields[acc]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.progress.stop()

    def rung_started(self, index: int, rungs: int, epochs: int, units: list[Unit]) -> None:
        self.rung = f"rung {index + 1}/{rungs}"
        arms = len({(u.config, u.lr) for u in units})
        self.console.print(
            f"confirm {self.rung}: {epochs} epoch(s), {arms} candidate × learning-rate arm(s), "
            f"{len(units)} run(s)",
            highlight=False,
            soft_wrap=True,
        )

    @staticmethod
    def _label(unit: Unit) -> str:
        batch = f" batch {unit.batch_size}" if unit.batch_size else ""
        return f"{escape(unit.config)} lr {unit.lr:g} seed {unit.seed}{batch}"

    def started(self, unit: Unit):
        """The progress callback of one run."""
        task = self.progress.add_task(
            f"{self.rung} {self._label(unit)}", total=None, epoch="-", loss="-", acc="-"
        )
        self._tasks.append(task)

        def update(event: TrainProgress) -> None:
            acc = "-" if event.val_accuracy is None else f"{event.val_accuracy:.3f}"
            self.progress.update(
                task,
                completed=event.step,
                total=event.total_steps,
                epoch=f"{event.epoch}/{event.epochs}",
                loss=f"{event.train_loss:.3f}",
                acc=acc,
            )

        return update

    def finished(self, unit: Unit, trial: FrozenTrial) -> None:
        """One line: the run's accuracy and flags, or why it failed."""
        while self._tasks:
            self.progress.remove_task(self._tasks.pop())
        head = f"  {self._label(unit)}, {unit.epochs} ep"
        if trial.state != TrialState.COMPLETE:
            reason = escape(str(trial.user_attrs.get("fail_reason")))
            self.console.print(f"{head}: skipped: {reason}", markup=True, highlight=False, soft_wrap=True)
            return
        run = trial.user_attrs["run"]
        flags = "".join(f" [bold red]{f}[/]" for f in ("diverged", "collapsed") if run.get(f))
        self.console.print(
            f"{head}: accuracy {run['accuracy']:.3f}{flags} · {run['seconds']:.1f} s · "
            f"{run['images_per_s']:.0f} img/s",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
