"""What a training run optimises and how it is judged, as typed data: the dataset determines the task.

Two tasks, both cross-entropy in nats during training:

- :data:`CLASSIFICATION` (images → K classes): metric ``accuracy`` (0–1, higher is better, the best over
  epochs counts), loss = cross-entropy of the (B, K) logits; divergence reference ln K; **collapse**: a final
  accuracy no better than a constant prediction, ≤ p + ``COLLAPSE_Z`` · sqrt(p(1 − p)/n), p the most frequent
  class's share of the n validation labels.
- :data:`LANGUAGE_MODEL` (bytes → next byte): metric ``val_loss`` in **bits per byte** (lower is better,
  the best over epochs counts) = mean next-byte cross-entropy in nats / ln 2 over the validation windows;
  loss = cross-entropy of the (B, L, 256) logits against the (B, L) next bytes; divergence reference ln 256;
  **collapse**: a final val_loss ≥ H₁ − ``LM_COLLAPSE_MARGIN_BITS``, H₁ the unigram entropy of the training
  bytes (:meth:`~normsearch.text.TextData.unigram_bits`): the run learned no more than how often each byte
  occurs. On the standard-library corpus H₁ = 4.66 bits/byte (4 MiB cap); the issue's stalled runs sat at
  4.66 while trained ones reach 2.9–3.9, so a 0.25 margin (4.41) separates them with room for seed noise.
  Its default optimizer is AdamW with linear warmup and cosine decay (:data:`LM_TRAINING`).

``task_of(data)`` reads ``data.task`` (``ImageData``: classification, ``TextData``: language_model). Datasets
are duck-typed here (this module sits below :mod:`normsearch.data`): images as ``data.train.tensors`` /
``data.val.tensors`` and ``data.inputs``, text as ``data.windows`` / ``data.batch`` / ``data.unigram_bits``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COLLAPSE_Z = 3.0
"""Standard errors above a constant prediction's accuracy that a classifier must beat."""
LM_COLLAPSE_MARGIN_BITS = 0.25
"""Bits per byte below the unigram entropy that a language model must reach not to count as collapsed."""
EVAL_BATCH = 512
"""Images per evaluation batch."""
LM_EVAL_WINDOWS = 256
"""Validation windows a language model is evaluated on: the first ones, without overlap (fixed, so every run
sees the same bytes)."""
LM_EVAL_BATCH = 64
LN2 = math.log(2.0)
LM_TRAINING = {
    "model": "gpt",
    "dataset": "text",
    "optimizer": "adamw",
    "lr": 0.002,
    "weight_decay": 0.1,
    "schedule": "cosine",
    "warmup_epochs": 0.02,
    "batch_size": 16,
}
"""The language model's training recipe as confirmation settings (``ConfirmSettings(**LM_TRAINING)``):
AdamW (weight decay 0.1), linear warmup over 2 % of an epoch (≈ 70 steps of the standard-library corpus at
context 64, batch 16), cosine decay."""


def accuracy_collapse_threshold(labels: Tensor) -> float:
    """p + COLLAPSE_Z · sqrt(p(1 − p)/n) for validation ``labels`` (n,) int64, p the most frequent class's
    share: on digits (K = 10, n = 359) 16.8 %, 3 standard errors above chance."""
    n = len(labels)
    p = torch.bincount(labels).max().item() / n
    return p + COLLAPSE_Z * math.sqrt(p * (1.0 - p) / n)


def bits_per_byte(nats: float) -> float:
    """Mean cross-entropy in nats per byte → bits per byte (÷ ln 2)."""
    return nats / LN2


@dataclass(frozen=True)
class Task:
    """The shared face of a task: ``name``, the ``metric`` it reports and whether ``higher_is_better``."""

    name: str
    metric: str
    higher_is_better: bool
    step_optimizer: str = "sgd"
    """The optimizer of the one-step probe (``step_loss_ratio``): what this task trains with by default."""
    image_inputs: bool = True
    """Whether the inputs are images (a probe resolution applies)."""

    def best(self, values: list[float]) -> float:
        """The best of per-epoch metric values (the worst possible when there are none)."""
        if not values:
            return self.worst
        return max(values) if self.higher_is_better else min(values)

    @property
    def worst(self) -> float:
        """The metric of a run that completed no epoch: accuracy 0, val_loss inf."""
        return 0.0 if self.higher_is_better else math.inf

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy in nats: logits (B, K) against targets (B,), or (B, L, K) against (B, L)."""
        return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten())


@dataclass(frozen=True)
class Classification(Task):
    """Images → classes (see the module docstring)."""

    def samples(self, data: Any, context: int | None) -> int:
        """Training samples per epoch."""
        return len(data.train)

    def divergence_reference(self, data: Any) -> float:
        """ln K: the loss of a uniform prediction."""
        return math.log(data.num_classes)

    def train_batches(
        self, data: Any, batch_size: int, generator: torch.Generator, context: int | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch: a seeded permutation in batches (the last partial one dropped); stored images."""
        images, labels = data.train.tensors
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield images[index], labels[index]

    def inputs(self, data: Any, x: Tensor, device: torch.device, channels_last: bool) -> Tensor:
        """Stored images → network input on ``device`` (:meth:`ImageData.inputs`)."""
        x = data.inputs(x.to(device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        data: Any,
        device: torch.device,
        *,
        amp: bool = False,
        channels_last: bool = False,
        context: int | None = None,
    ) -> float:
        """Validation accuracy (0–1) in eval mode."""
        model.eval()
        images, labels = data.val.tensors
        correct = 0
        for start in range(0, len(labels), EVAL_BATCH):
            x = self.inputs(data, images[start : start + EVAL_BATCH], device, channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            correct += (logits.argmax(1).cpu() == labels[start : start + EVAL_BATCH]).sum().item()
        return correct / len(labels)

    def collapse_threshold(self, data: Any) -> float:
        """The accuracy at or below which a run counts as collapsed (module docstring)."""
        return accuracy_collapse_threshold(data.val.tensors[1])

    def collapsed(self, final: float, data: Any) -> bool:
        return final <= self.collapse_threshold(data)


@dataclass(frozen=True)
class LanguageModel(Task):
    """Bytes → next byte (see the module docstring). ``context``: bytes per training window."""

    def samples(self, data: Any, context: int | None) -> int:
        """Training windows per epoch: as many (context + 1)-byte windows as fit without overlap."""
        return data.windows("train", _context(context))

    def divergence_reference(self, data: Any) -> float:
        return math.log(data.num_classes)

    def train_batches(
        self, data: Any, batch_size: int, generator: torch.Generator, context: int | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of :meth:`samples` // ``batch_size`` batches of windows at seeded random offsets
        (uniform over the training bytes, as nanoGPT samples); (inputs, targets) int64 (B, context)."""
        context = _context(context)
        high = len(data.train) - context
        for _ in range(self.samples(data, context) // batch_size):
            starts = torch.randint(0, high, (batch_size,), generator=generator)
            yield data.batch(starts, "train", context)

    def inputs(self, data: Any, x: Tensor, device: torch.device, channels_last: bool) -> Tensor:
        return x.to(device, non_blocking=True)

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        data: Any,
        device: torch.device,
        *,
        amp: bool = False,
        channels_last: bool = False,
        context: int | None = None,
    ) -> float:
        """Validation loss in bits per byte, eval mode: the mean next-byte cross-entropy over every
        position of the first :data:`LM_EVAL_WINDOWS` non-overlapping validation windows, ÷ ln 2."""
        model.eval()
        context = _context(context)
        count = min(data.windows("val", context), LM_EVAL_WINDOWS)
        starts = torch.arange(count) * context
        total = 0.0
        for first in range(0, count, LM_EVAL_BATCH):
            x, y = data.batch(starts[first : first + LM_EVAL_BATCH], "val", context)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x.to(device))
            total += float(self.loss(logits, y.to(device))) * y.numel()
        return bits_per_byte(total / (count * context))

    def collapse_threshold(self, data: Any) -> float:
        """The val_loss at or above which a run counts as collapsed: H₁ − margin (module docstring)."""
        return data.unigram_bits() - LM_COLLAPSE_MARGIN_BITS

    def collapsed(self, final: float, data: Any) -> bool:
        return not final < self.collapse_threshold(data)


LM_CONTEXT = 64
"""Context of a language model that does not say its own (a ``context`` attribute)."""


def _context(context: int | None) -> int:
    return LM_CONTEXT if context is None else context


CLASSIFICATION = Classification("classification", "accuracy", higher_is_better=True)
LANGUAGE_MODEL = LanguageModel(
    "language_model", "val_loss", higher_is_better=False, step_optimizer="adamw", image_inputs=False
)
"""Its one-step probe takes AdamW, its training optimizer (AdamW's first step is sign-like, unlike SGD's;
weight decay left out: lr · wd · θ is negligible in one step)."""
TASKS: dict[str, Classification | LanguageModel] = {t.name: t for t in (CLASSIFICATION, LANGUAGE_MODEL)}


def task_of(data: Any) -> Classification | LanguageModel:
    """The task a dataset defines (its ``task`` name; classification when it names none)."""
    return TASKS[getattr(data, "task", CLASSIFICATION.name)]


__all__ = [
    "CLASSIFICATION",
    "COLLAPSE_Z",
    "LANGUAGE_MODEL",
    "LM_COLLAPSE_MARGIN_BITS",
    "LM_TRAINING",
    "TASKS",
    "Classification",
    "LanguageModel",
    "Task",
    "accuracy_collapse_threshold",
    "bits_per_byte",
    "task_of",
]
