"""One short training run: a candidate normalizer in the confirmation network, trained and validated.

``train(spec, settings, seed=...)`` builds ``build_model(settings.model, spec, ...)`` and hands it to
:func:`fit`, which runs minibatch training with cross-entropy (mean over the batch, and over positions for a
language model). The dataset determines the task (:mod:`normsearch.task`): it supplies the batches, the loss,
the evaluation, the collapse rule and the metric (``accuracy``, higher is better; or ``val_loss`` in bits per
byte, lower is better); this module has no task-specific branches:

- optimizer ``sgd`` (momentum, weight decay), ``adam`` or ``adamw``; learning rate per step
  lr(t) = lr · w(t) · s(t), with w the linear warmup over ``warmup_epochs`` and s the schedule over the
  remaining steps (fraction u ∈ [0, 1]): ``constant`` 1, ``cosine`` ½(1 + cos πu), ``step`` 1 then 0.1 from
  u = 0.75 (the Beyond-BatchNorm schedule);
- an epoch is a pass over a seeded permutation of the training set in batches of ``batch_size`` (the last
  partial batch is dropped, so a batch-statistics layer never sees a tiny batch); for a language model, as
  many seeded random windows of ``model.context`` bytes as fit in the training bytes; ``steps`` caps the
  total;
- augmentation (``augment``): ``flip`` mirrors each training image left-right with probability ½ (the
  Beyond-BatchNorm code's only augmentation), drawn from the run's seeded generator; ``auto`` is ``flip``
  for the datasets in :data:`normsearch.data.FLIP_SYMMETRIC` (CIFAR) and ``none`` otherwise;
- after each epoch: mean training loss and the task's validation metric (eval mode, running statistics):
  ``val_accuracy`` or ``val_loss`` per epoch;
- divergence: a training loss that is NaN/inf or above ``DIVERGENCE_FACTOR`` × max(ln K, first loss)
  (K the classes, 256 for bytes) stops the run at once and sets ``diverged``; metrics then cover the
  completed epochs only;
- collapse: a run that did not diverge but whose last metric is no better than a trivial predictor sets
  ``collapsed`` (the task's rule: a constant class, or the unigram entropy of the training bytes);
- on CUDA: bf16 autocast (``amp``) and channels_last (``channels_last``) when enabled; on CPU, ``threads``
  torch threads for the run (the previous count is restored after);
- ``compile``: the training steps run ``torch.compile(model)`` (the same parameters; dynamo's caches are
  cleared first, so every run compiles its own network afresh, while inductor's kernel cache is kept).
  Evaluation stays eager. Eager is the exact reference: compiled kernels differ only by float rounding.

A batch size other than ``settings.batch_size`` (the small-batch retrain) scales the learning rate
linearly: lr · batch / settings.batch_size.

Throughput is training images per second of training-step time (evaluation excluded; compiling included).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .candidate import CandidateConfig, as_candidate
from .data import FLIP_SYMMETRIC, ImageData, load_data
from .models import build_model
from .norm import Spec
from .norm.functional import compile_core
from .task import (
    CLASSIFICATION,
    Classification,
    LanguageModel,
    accuracy_collapse_threshold,
    task_of,
)
from .text import TextData

if TYPE_CHECKING:  # the confirm package imports this module
    from .confirm.settings import ConfirmSettings

DIVERGENCE_FACTOR = 10.0
collapse_threshold = accuracy_collapse_threshold
"""The accuracy at or below which a classifier's run counts as collapsed (:mod:`normsearch.task`)."""


@dataclass(frozen=True)
class TrainProgress:
    """What a progress callback sees after each step (``val_accuracy``: the task's metric after the last
    completed epoch, accuracy or val_loss, or None; the name is kept from when only accuracy existed)."""

    step: int
    total_steps: int
    epoch: int
    epochs: int
    train_loss: float
    val_accuracy: float | None


Progress = Callable[[TrainProgress], None]
EpochEnd = Callable[[int, float], None]
"""Called after each completed epoch with (epoch, the task's validation metric: accuracy or val_loss)."""


@dataclass
class TrainResult:
    """Records of one run: per-epoch ``train_loss`` and the task's metric (``val_accuracy`` for
    classification, ``val_loss`` in bits per byte for a language model), and the summary numbers.

    ``metric`` / ``higher_is_better`` name the task's metric; ``value`` is its best over completed epochs and
    ``final_value`` its last (the worst possible, 0 or inf, when none completed). ``accuracy`` and
    ``final_accuracy`` stay the classification view (0 for a language model); ``best_val_loss`` and
    ``final_val_loss`` the language-model one (None for a classifier)."""

    spec: str
    seed: int
    batch_size: int
    device: str
    task: str = CLASSIFICATION.name
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    steps: int = 0
    diverged: bool = False
    collapsed: bool = False
    seconds: float = 0.0
    images_per_s: float = 0.0

    @property
    def _task(self) -> Classification | LanguageModel:
        return task_of(self)

    @property
    def metric(self) -> str:
        """``accuracy`` or ``val_loss``."""
        return self._task.metric

    @property
    def higher_is_better(self) -> bool:
        return self._task.higher_is_better

    @property
    def values(self) -> list[float]:
        """The metric per completed epoch."""
        return self.val_accuracy if self.higher_is_better else self.val_loss

    @property
    def value(self) -> float:
        """The metric's best over completed epochs."""
        return self._task.best(self.values)

    @property
    def final_value(self) -> float:
        """The metric after the last completed epoch."""
        return self.values[-1] if self.values else self._task.worst

    @property
    def accuracy(self) -> float:
        """Best validation accuracy over completed epochs (0–1; 0 when none completed)."""
        return max(self.val_accuracy, default=0.0)

    @property
    def final_accuracy(self) -> float:
        """Validation accuracy after the last completed epoch (0 when none completed)."""
        return self.val_accuracy[-1] if self.val_accuracy else 0.0

    @property
    def best_val_loss(self) -> float | None:
        """Lowest validation bits per byte over completed epochs (inf when none; None for a classifier)."""
        return None if self.higher_is_better else self.value

    @property
    def final_val_loss(self) -> float | None:
        return None if self.higher_is_better else self.final_value

    def to_dict(self) -> dict[str, Any]:
        summary = {"accuracy": self.accuracy, "final_accuracy": self.final_accuracy}
        if not self.higher_is_better:
            summary.update(best_val_loss=self.best_val_loss, final_val_loss=self.final_val_loss)
        return {
            **asdict(self),
            **summary,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "value": self.value,
        }


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available; use device 'cpu' or 'auto'")
    return torch.device(name)


OPTIMIZERS: dict[str, Callable[[Any, ConfirmSettings, float], torch.optim.Optimizer]] = {
    "sgd": lambda params, s, lr: torch.optim.SGD(
        params, lr=lr, momentum=s.momentum, weight_decay=s.weight_decay
    ),
    "adam": lambda params, s, lr: torch.optim.Adam(params, lr=lr, weight_decay=s.weight_decay),
    "adamw": lambda params, s, lr: torch.optim.AdamW(params, lr=lr, weight_decay=s.weight_decay),
}

SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda u: 1.0,
    "cosine": lambda u: 0.5 * (1.0 + math.cos(math.pi * u)),
    "step": lambda u: 1.0 if u < 0.75 else 0.1,
}


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """w(t) · s(t) for step t (0-based) of ``total``, with ``warmup`` linear warmup steps."""
    if step < warmup:
        return (step + 1) / warmup
    return SCHEDULES[schedule]((step - warmup) / max(total - warmup, 1))


def augmentation(augment: str, dataset: str) -> str:
    """``augment`` with ``auto`` resolved for ``dataset``: ``flip`` or ``none``."""
    if augment == "auto":
        return "flip" if dataset in FLIP_SYMMETRIC else "none"
    return augment


def flip_batch(images: Tensor, generator: torch.Generator) -> Tensor:
    """Each image of ``images`` (B, C, H, W) mirrored left-right with probability ½ (B draws from
    ``generator``)."""
    mirrored = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(mirrored.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)


def evaluate(
    model: nn.Module,
    data: ImageData | TextData,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> float:
    """The task's validation metric of ``model`` on ``data`` in eval mode (accuracy 0–1, or bits per byte)."""
    return task_of(data).evaluate(
        model, data, device, amp=amp, channels_last=channels_last, context=getattr(model, "context", None)
    )


@dataclass(frozen=True)
class Plan:
    """Batch size, steps per epoch, total steps, epochs, peak learning rate and warmup steps of a run."""

    batch_size: int
    per_epoch: int
    total: int
    epochs: int
    lr: float
    warmup: int

    @classmethod
    def of(cls, settings: ConfirmSettings, train_size: int, batch_size: int | None) -> Plan:
        """The plan for ``train_size`` samples per epoch (images, or text windows); a batch other than
        ``settings.batch_size`` scales lr linearly."""
        batch = min(batch_size or settings.batch_size, train_size)
        per_epoch = train_size // batch
        total = settings.epochs * per_epoch
        total = min(settings.steps, total) if settings.steps else total
        lr = settings.lr * batch / settings.batch_size
        return cls(
            batch,
            per_epoch,
            total,
            math.ceil(total / per_epoch),
            lr,
            round(settings.warmup_epochs * per_epoch),
        )


@contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads (None: leave them), then restore the previous count."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def compiled(model: nn.Module) -> nn.Module:
    """:func:`~normsearch.norm.functional.compile_core` of ``model`` (``torch.compile`` with the options the
    norm layers' core is compiled with), after ``torch.compiler.reset()``: dynamo keeps a few compiled
    variants per code object (``recompile_limit``, 8) and would run later networks of a confirmation
    eagerly."""
    torch.compiler.reset()
    return compile_core(model)


def fit(
    model: nn.Module,
    data: ImageData | TextData,
    settings: ConfirmSettings,
    *,
    seed: int,
    batch_size: int | None = None,
    spec: str = "",
    progress: Progress | None = None,
    on_epoch: EpochEnd | None = None,
) -> TrainResult:
    """Train ``model`` on ``data``: images (B, data.in_channels, R, R) → (B, data.num_classes) logits, or
    bytes (B, L) → (B, L, 256) logits with L = ``model.context`` (:mod:`normsearch.task`)."""
    device = resolve_device(settings.device)
    samples = task_of(data).samples(data, getattr(model, "context", None))
    with cpu_threads(settings.threads if device.type == "cpu" else None):
        return _Run(
            model,
            data,
            settings,
            device,
            Plan.of(settings, samples, batch_size),
            seed,
            spec,
            progress,
            on_epoch,
        ).fit()


class _Run:
    """The state of one :func:`fit` call: model, optimizer, schedule, records."""

    def __init__(
        self,
        model: nn.Module,
        data: ImageData | TextData,
        settings: ConfirmSettings,
        device: torch.device,
        plan: Plan,
        seed: int,
        spec: str,
        progress: Progress | None,
        on_epoch: EpochEnd | None,
    ) -> None:
        on_cuda = device.type == "cuda"
        self.amp, self.channels_last = settings.amp and on_cuda, settings.channels_last and on_cuda
        self.data, self.device, self.plan, self.progress, self.on_epoch = (
            data,
            device,
            plan,
            progress,
            on_epoch,
        )
        layout = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=layout)
        self.step_model = compiled(self.model) if settings.compile else self.model
        self.optimizer = OPTIMIZERS[settings.optimizer](self.model.parameters(), settings, plan.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda t: lr_factor(t, plan.total, plan.warmup, settings.schedule)
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.flip = augmentation(settings.augment, data.name) == "flip"
        self.task = task_of(data)
        self.context = getattr(model, "context", None)
        self.result = TrainResult(
            spec=spec, seed=seed, batch_size=plan.batch_size, device=str(device), task=self.task.name
        )
        self.limit: float | None = None

    def fit(self) -> TrainResult:
        result, started, train_seconds = self.result, time.perf_counter(), 0.0
        for epoch in range(1, self.plan.epochs + 1):
            tick = time.perf_counter()
            losses = self._epoch(epoch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            train_seconds += time.perf_counter() - tick
            if result.diverged:
                break
            result.train_loss.append(sum(losses) / len(losses))
            result.values.append(
                self.task.evaluate(
                    self.model,
                    self.data,
                    self.device,
                    amp=self.amp,
                    channels_last=self.channels_last,
                    context=self.context,
                )
            )
            if self.on_epoch:
                self.on_epoch(epoch, result.values[-1])
        result.collapsed = not result.diverged and self.task.collapsed(result.final_value, self.data)
        result.seconds = time.perf_counter() - started
        result.images_per_s = (
            result.steps * self.plan.batch_size / train_seconds if train_seconds > 0 else 0.0
        )
        return result

    def _epoch(self, epoch: int) -> list[float]:
        """One pass (or what is left of the step budget); stops at divergence. Returns the step losses."""
        result, losses = self.result, []
        self.model.train()
        batches = self.task.train_batches(self.data, self.plan.batch_size, self.generator, self.context)
        for images, labels in batches:
            if self.flip:
                images = flip_batch(images, self.generator)
            x = self.task.inputs(self.data, images, self.device, self.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = self.task.loss(self.step_model(x), labels.to(self.device, non_blocking=True))
            value = loss.item()
            self.limit = self.limit or DIVERGENCE_FACTOR * max(
                self.task.divergence_reference(self.data), value
            )
            if not math.isfinite(value) or value > self.limit:
                result.diverged = True
                break
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            losses.append(value)
            result.steps += 1
            if self.progress:
                last = result.values[-1] if result.values else None
                self.progress(
                    TrainProgress(result.steps, self.plan.total, epoch, self.plan.epochs, value, last)
                )
            if result.steps == self.plan.total:
                break
        return losses


def train(
    spec: Spec | CandidateConfig,
    settings: ConfirmSettings,
    *,
    seed: int,
    batch_size: int | None = None,
    progress: Progress | None = None,
    on_epoch: EpochEnd | None = None,
) -> TrainResult:
    """Train the confirmation network with normalizer ``spec`` once; ``seed`` fixes init and data order.
    ``spec`` may carry network options (a :class:`~normsearch.models.CandidateConfig` or its string): the
    network is built with them.

    Raises ``ValueError`` for an invalid spec, :class:`normsearch.data.DatasetUnavailable` for missing data.
    """
    config = as_candidate(spec)
    data = load_data(
        settings.dataset,
        resolution=settings.resolution,
        data_dir=settings.data_dir,
        download=settings.download,
    )
    torch.manual_seed(seed)
    model = build_model(
        settings.model,
        config.layer,
        depth=settings.depth,
        width=settings.width,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        skipinit=settings.skipinit,
        resolution=data.resolution,
        network=config.options,
    )
    return fit(
        model,
        data,
        settings,
        seed=seed,
        batch_size=batch_size,
        spec=config.spec(),
        progress=progress,
        on_epoch=on_epoch,
    )
