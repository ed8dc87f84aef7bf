"""The functions of :mod:`normsearch.norm.primitives` on torch's internal fused kernels (``torch.ops.aten``).

Same names, signatures and values (to float32 rounding); about twice as fast on CPU, so the library's
layer runs on these. They are private torch APIs that torch may change without notice: exported files
never contain them (they get :mod:`~normsearch.norm.primitives`), and ``tests/test_norm_backward.py``
checks both versions agree on the torch installed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def group_moments(x: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """As :func:`normsearch.norm.primitives.group_moments`, in one vectorized Welford pass of torch's
    group-norm kernel (``torch.var_mean`` is ~15× slower on CPU). It returns rstd = (σ² + eps)^(-1/2),
    so σ² = rstd⁻² − eps, exact up to the rounding of σ² + eps; the scratch is its normalized output."""
    n, c, *spatial = x.shape
    out, mean, rstd = torch.ops.aten.native_group_norm(
        x, None, None, n, c, math.prod(spatial), groups, eps
    )
    return mean, rstd.pow(-2) - eps, out


def row_sums(t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """As :func:`normsearch.norm.primitives.row_sums`, in one pass and no temporary: torch's group-norm
    backward with one group per (sample, channel) row, mean 0 and rstd 1 returns exactly these as its γ and
    β gradients (t, x contiguous)."""
    n, c, *spatial = x.shape
    rows = n * c
    zeros, ones = x.new_zeros(1, rows), x.new_ones(1, rows)
    _, dot, total = torch.ops.aten.native_group_norm_backward(
        t, x, zeros, ones, None, 1, rows, math.prod(spatial), rows, [False, True, True]
    )
    return dot.view(n, c), total.view(n, c)


def relu_grad(g: Tensor, u: Tensor, *, out: Tensor) -> Tensor:
    """As :func:`normsearch.norm.primitives.relu_grad` (``threshold_backward``)."""
    return torch.ops.aten.threshold_backward(g, u, 0.0, grad_input=out)


def sigmoid_grad_(g: Tensor, s: Tensor) -> Tensor:
    """As :func:`normsearch.norm.primitives.sigmoid_grad_` (``sigmoid_backward`` into g)."""
    return torch.ops.aten.sigmoid_backward(g, s, grad_input=g)


__all__ = ["group_moments", "relu_grad", "row_sums", "sigmoid_grad_"]
