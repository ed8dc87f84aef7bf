"""Datasets: the offline default (scikit-learn's bundled 8×8 handwritten digits) and friends.

``digits_tensors(split)`` is the one source of the digits data for both the probes and the confirmation
training: 1797 real images, split once with a fixed permutation into 80 % train / 20 % validation.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import Tensor

DIGITS_SPLIT_SEED = 0
DIGITS_VAL_FRACTION = 0.2


@cache
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0 - 0.5) / 0.5  # pixels 0..16 → [-1, 1] (mean = std = 0.5)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
    return images, bunch.target.astype(np.int64), order


def digits_tensors(split: str = "train") -> tuple[Tensor, Tensor]:
    """Digits as (images (n, 1, 8, 8) float32 in [-1, 1], labels (n,) int64) for ``train``, ``val`` or ``all``."""
    images, labels, order = _digits()
    n_val = int(round(len(order) * DIGITS_VAL_FRACTION))
    index = {"train": order[n_val:], "val": order[:n_val], "all": order}.get(split)
    if index is None:
        raise ValueError(f"digits split must be one of train, val, all; got {split!r}")
    return torch.from_numpy(images[index]).unsqueeze(1), torch.from_numpy(labels[index])
