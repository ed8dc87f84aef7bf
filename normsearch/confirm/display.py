"""Progress of the confirmation on a (stderr) console: a live bar per run on a terminal, a line per candidate.

The bar shows the candidate, seed and batch, epoch, running training loss and last validation accuracy; it
is drawn only when the console is a terminal. The per-candidate result lines are printed in any case.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..train import TrainProgress
from .select import Candidate


class TrainingDisplay:
    """Context manager around a rich ``Progress``; ``callback(...)`` feeds it from :func:`normsearch.train.fit`."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.total = total
        self._tasks: list[Any] = []
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

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.progress.stop()

    def callback(self, index: int, candidate: Candidate, seed: int, batch_size: int | None):
        """A progress callback for one run of candidate number ``index`` (1-based)."""
        batch = f" batch {batch_size}" if batch_size else ""
        label = f"[{index}/{self.total}] {escape(candidate.config)} seed {seed}{batch}"
        task = self.progress.add_task(label, total=None, epoch="-", loss="-", acc="-")
        self._tasks.append(task)

        def update(event: TrainProgress) -> None:
            acc = "-" if event.val_accuracy is None else f"{event.val_accuracy:.3f}"
            self.progress.update(task, completed=event.step, total=event.total_steps,
                                 epoch=f"{event.epoch}/{event.epochs}", loss=f"{event.train_loss:.3f}", acc=acc)

        return update

    def report(self, index: int, candidate: Candidate, record: dict[str, Any] | None, note: str = "") -> None:
        """One line: the candidate's accuracy, divergence, time and throughput (or why it has none)."""
        while self._tasks:
            self.progress.remove_task(self._tasks.pop())
        head = f"confirm [{index}/{self.total}] {escape(candidate.config)} ({candidate.reason})"
        if record is None:
            self.console.print(f"{head}: {note}", highlight=False, soft_wrap=True)
            return
        state = "[bold red]diverged[/] " if record["diverged"] else ""
        small = record.get("small_batch")
        small_text = f", batch {small['batch_size']}: {small['accuracy']:.3f}" if small else ""
        self.console.print(
            f"{head}: {state}accuracy {record['accuracy']:.3f}{small_text} · {record['seconds']:.1f} s · "
            f"{record['images_per_s']:.0f} img/s{note}",
            highlight=False,
            soft_wrap=True,
        )
