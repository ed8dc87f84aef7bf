"""Shared by the layer benchmarks: forward+backward timing of two modules in the same run, and the
channels-last wrapper that gives nn.LayerNorm / nn.RMSNorm over C at every position."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ChannelsLast(nn.Module):
    """A last-dim layer applied over C at every position of (N, C, *S)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.movedim(1, -1)).movedim(-1, 1)


def reference_name(module: nn.Module) -> str:
    return type(module.inner if isinstance(module, ChannelsLast) else module).__name__


def fwd_bwd_seconds(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, *, sync: bool = False) -> float:
    """Seconds of one forward and backward of ``module`` at ``x`` (``sync``: wait for CUDA before and after)."""
    xr = x.detach().requires_grad_(True)
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    module(xr).backward(grad)
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timed_pair(
    a: nn.Module, b: nn.Module, x: torch.Tensor, grad: torch.Tensor, repeats: int, *, sync: bool = False
) -> tuple:
    """(median ms of a, median ms of b, median of the per-repeat ratios a/b).

    Each repeat times a and b back to back (alternating which goes first), so a burst of load from other
    processes hits both sides of a ratio alike. ``sync``: time CUDA work (see :func:`fwd_bwd_seconds`).
    """
    for module in (a, b):  # warm-up
        fwd_bwd_seconds(module, x, grad, sync=sync)
    times_a, times_b = [], []
    for repeat in range(repeats):
        if repeat % 2:
            times_b.append(fwd_bwd_seconds(b, x, grad, sync=sync))
            times_a.append(fwd_bwd_seconds(a, x, grad, sync=sync))
        else:
            times_a.append(fwd_bwd_seconds(a, x, grad, sync=sync))
            times_b.append(fwd_bwd_seconds(b, x, grad, sync=sync))
    ratio = statistics.median(ta / tb for ta, tb in zip(times_a, times_b, strict=True))
    return 1e3 * statistics.median(times_a), 1e3 * statistics.median(times_b), ratio


@contextmanager
def empty_inductor_cache(name: str) -> Iterator[None]:
    """Inductor's kernel cache in a fresh temporary directory for the block: its compiles are first compiles,
    with no kernels from earlier runs (``TORCHINDUCTOR_CACHE_DIR``; the directory is removed after)."""
    with tempfile.TemporaryDirectory(prefix=f"{name}_inductor_", ignore_cleanup_errors=True) as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        yield
