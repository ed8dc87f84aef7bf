"""Seeded probe inputs and init seeds: pass i of a run with base seed s is fully fixed by (s, i).

- ``digits``: ``batch_size`` training images of :func:`normsearch.data.digits_tensors` (drawn without
  replacement, cycling through fresh permutations if the batch is larger than the split), upsampled from 8×8
  to ``resolution`` × ``resolution`` bilinearly (``align_corners=False``), with their labels.
  (The paper's batch also has random horizontal flips; digits are not flip-symmetric, so none here.)
- ``gaussian``: i.i.d. N(0, 1) images and uniform labels in [0, 10).

Both come as (N, 1, R, R) float32 and (N,) int64; 10 classes. Any other dataset name of
:mod:`normsearch.data` (``imagefolder:PATH``, ``FILE.py:FUNC``, ``synthetic``, …): ``batch_size`` training
images drawn as for digits, as :meth:`~normsearch.data.ImageData.inputs` gives them at ``resolution``; its
channels and classes (:func:`data_shape`).

The data's task (:func:`probe_task`) decides what a batch is: a language-model corpus (``text``,
``text:PATH``) gives ``batch_size`` training windows of ``context`` bytes at seeded random offsets
(:func:`~normsearch.probes.transformer.text_batch`): (inputs, targets) (N, context) int64.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import digits_tensors, load_data
from ..task import CLASSIFICATION, Task, task_of
from .settings import ProbeSettings
from .transformer import text_batch

NUM_CLASSES = 10
IN_CHANNELS = 1
_INPUT_STREAM, _INIT_STREAM = 0, 1


def derived_seed(base: int, index: int, stream: int) -> int:
    """A 63-bit seed for pass ``index`` of a run with seed ``base``; ``stream`` 0 for inputs, 1 for init."""
    return int(np.random.SeedSequence([base, index, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def init_seed(settings: ProbeSettings, index: int) -> int:
    """The torch seed that initialises the network of pass ``index``."""
    return derived_seed(settings.seed, index, _INIT_STREAM)


def _digits(settings: ProbeSettings, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    images, labels = digits_tensors("train")
    n = images.shape[0]
    order = torch.cat(
        [torch.randperm(n, generator=generator) for _ in range(math.ceil(settings.batch_size / n))]
    )
    index = order[: settings.batch_size]
    size = (settings.resolution, settings.resolution)
    batch = images[index]
    if batch.shape[-2:] != size:
        batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
    return batch.contiguous(), labels[index]


def _gaussian(settings: ProbeSettings, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    shape = (settings.batch_size, IN_CHANNELS, settings.resolution, settings.resolution)
    images = torch.randn(shape, generator=generator)
    return images, torch.randint(0, NUM_CLASSES, (settings.batch_size,), generator=generator)


def _dataset(settings: ProbeSettings, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    data = load_data(settings.data, resolution=settings.resolution)
    images, labels = data.train.tensors
    n = images.shape[0]
    order = torch.cat(
        [torch.randperm(n, generator=generator) for _ in range(math.ceil(settings.batch_size / n))]
    )
    index = order[: settings.batch_size]
    return data.inputs(images[index]).contiguous(), labels[index]


SOURCES: dict[str, Callable[[ProbeSettings, torch.Generator], tuple[Tensor, Tensor]]] = {
    "digits": _digits,
    "gaussian": _gaussian,
}


def data_shape(settings: ProbeSettings) -> tuple[int, int]:
    """(input channels, classes) of the probe inputs."""
    if settings.data in SOURCES:
        return IN_CHANNELS, NUM_CLASSES
    data = load_data(settings.data, resolution=settings.resolution)
    return data.in_channels, data.num_classes


def probe_task(settings: ProbeSettings) -> Task:
    """The task of the probe data (:func:`normsearch.task.task_of`): classification for gaussian and digits."""
    if settings.data in SOURCES:
        return CLASSIFICATION
    return task_of(load_data(settings.data, resolution=settings.resolution))


def probe_batch(settings: ProbeSettings, index: int, context: int | None = None) -> tuple[Tensor, Tensor]:
    """(images (N, C, R, R), labels (N,)) of pass ``index``, or for a language-model corpus (inputs,
    targets) (N, ``context``) byte windows; depends only on the settings, ``index`` and ``context``."""
    seed = derived_seed(settings.seed, index, _INPUT_STREAM)
    if probe_task(settings) is not CLASSIFICATION:
        if context is None:
            raise ValueError("a language-model probe batch needs the network's context")
        data = load_data(settings.data, resolution=settings.resolution)
        return text_batch(data, settings.batch_size, context, seed)
    generator = torch.Generator().manual_seed(seed)
    return SOURCES.get(settings.data, _dataset)(settings, generator)


__all__ = [
    "IN_CHANNELS",
    "NUM_CLASSES",
    "SOURCES",
    "data_shape",
    "derived_seed",
    "init_seed",
    "probe_batch",
    "probe_task",
]
