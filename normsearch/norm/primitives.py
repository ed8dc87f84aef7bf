"""Four reductions and in-place gradient steps of the functional core, in public torch APIs.

:mod:`normsearch.norm.functional` calls them by name. Exported files get these definitions
(public APIs only); the library binds the same names to :mod:`normsearch.norm.primitives_aten`,
which computes the same values with torch's internal fused kernels, about twice as fast on CPU.
Shapes: x, t, g, u, s (N, C, *S) contiguous; G groups of C/G contiguous channels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_moments(x: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and biased variance of each (sample, group) of x (N, C, *S) over (C/G, *S), shapes
    (N, G), and a scratch tensor shaped like x (to be overwritten). Two passes:
    μ = mean(x), σ² = mean((x − μ)²). ``eps`` is unused here (the fused version needs it)."""
    n = x.shape[0]
    rows = x.reshape(n, groups, -1)
    mean = rows.mean(2, keepdim=True)
    centered = x.new_empty(x.shape)
    torch.sub(rows, mean, out=centered.view(n, groups, -1))
    var = centered.view(n, groups, -1).square_().mean(2)
    return mean.view(n, groups), var, centered


def row_sums(t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ t · x, Σ t) over *S for t, x (N, C, *S): shapes (N, C)."""
    n, c = x.shape[:2]
    t_rows, x_rows = t.reshape(n * c, -1), x.reshape(n * c, -1)
    return torch.linalg.vecdot(t_rows, x_rows).view(n, c), t_rows.sum(1).view(n, c)


def relu_grad(g: Tensor, u: Tensor, *, out: Tensor) -> Tensor:
    """g where u > 0, else 0 (the gradient through relu(u)), written into ``out`` (which may
    be g or u)."""
    return torch.where(u > 0, g, g.new_zeros(()), out=out)


def sigmoid_grad_(g: Tensor, s: Tensor) -> Tensor:
    """g overwritten with g · (1 − s) · s: the gradient through s = sigmoid(·)."""
    return g.mul_(1 - s).mul_(s)


__all__ = ["group_moments", "relu_grad", "row_sums", "sigmoid_grad_"]
