"""One probe pass over a network: the raw per-depth curves of "Beyond BatchNorm", read through hooks.

On one batch, in train mode: forward, mean cross-entropy, backward. Forward hooks on the network's
``block_outputs()`` reduce each block output a (N, C, *S) on the spot to

    variance(a)   = mean over channels c of Var_unbiased over (N, *S) of a[:, c]       (paper: activs_norms)
    similarity(a) = mean over i ≠ j of cos(a_i, a_j), a_i = a[i] flattened             (paper: activs_corr)

and forward hooks on ``conv_layers()`` keep each conv output z, whose gradient is then

    grad_norm(z)  = ‖∂L/∂z‖_F over the whole batch tensor, L = batch-mean cross-entropy  (paper: grads_norms)

and, from the same backward pass, ∇θL for every trainable parameter θ (for the one-step probe, :mod:`.step`).

The similarity uses the normalized-sum identity instead of the N×N Gram matrix:
Σ_{i≠j} x̂_i·x̂_j = ‖Σ_i x̂_i‖² − Σ_i ‖x̂_i‖², with x̂_i = a_i / ‖a_i‖; a sample whose activations are all zero
counts as orthogonal to every other (the paper's code would divide by zero). The backward is
``torch.autograd.grad(L, conv outputs + parameters)``: one pass, ``.grad`` fields untouched. Hooks are removed and the train/eval mode restored afterwards; the forward
pass itself still updates running statistics (as any train-mode forward does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import ProbedNetwork


@dataclass(frozen=True)
class Trace:
    """Raw curves of one probe pass (float64, CPU): variance and similarity per block output, grad_norm
    per conv, in depth order; ``loss`` the batch-mean cross-entropy; ``parameter_grads`` ∇θL for each
    trainable parameter in ``model.parameters()`` order (None where L does not depend on it)."""

    variance: Tensor
    similarity: Tensor
    grad_norm: Tensor
    loss: float
    parameter_grads: tuple[Tensor | None, ...] = field(default=(), repr=False, compare=False)


def channel_variance(a: Tensor) -> Tensor:
    """Mean over channels of the unbiased variance over (N, *S). a: (N, C, *S) → scalar tensor."""
    dims = (0, *range(2, a.dim()))
    return torch.var(a, dim=dims, correction=1).mean()


def mean_cosine_similarity(a: Tensor) -> Tensor:
    """Mean off-diagonal cosine similarity of the N flattened samples of a (N, ...) → scalar tensor.

    (‖Σ x̂_i‖² − Σ ‖x̂_i‖²) / (N (N − 1)), x̂_i = a_i / ‖a_i‖ (all-zero rows stay zero); O(N · D), no Gram matrix.
    """
    n = a.shape[0]
    flat = a.reshape(n, -1).float()
    unit = flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
    total = unit.sum(dim=0)
    return (total.square().sum() - unit.square().sum()) / (n * (n - 1))


def trace_network(model: ProbedNetwork, inputs: Tensor, targets: Tensor) -> Trace:
    """Probe ``model`` (an ``nn.Module`` with the probe points of :class:`~normsearch.models.ProbedNetwork`) on
    one batch; see the module docstring.

    inputs (N, C, H, W) with N ≥ 2, targets (N,) class indices. Non-finite values propagate into the curves
    (callers decide what is unstable); nothing here raises on NaN or inf.
    """
    if inputs.shape[0] < 2:
        raise ValueError(f"probe batch needs at least 2 samples, got {inputs.shape[0]}")
    blocks, convs = model.block_outputs(), model.conv_layers()
    variance: dict[int, Tensor] = {}
    similarity: dict[int, Tensor] = {}
    conv_outputs: list[Tensor | None] = [None] * len(convs)

    def keep_stats(index: int):
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> None:
            with torch.no_grad():
                variance[index] = channel_variance(output)
                similarity[index] = mean_cosine_similarity(output)

        return hook

    def keep_output(index: int):
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> None:
            conv_outputs[index] = output

        return hook

    handles = [m.register_forward_hook(keep_stats(i)) for i, m in enumerate(blocks)]
    handles += [m.register_forward_hook(keep_output(i)) for i, m in enumerate(convs)]
    was_training = model.training
    try:
        model.train()
        with torch.enable_grad():
            loss = F.cross_entropy(model(inputs), targets)
            missing = [i for i, z in enumerate(conv_outputs) if z is None or not z.requires_grad]
            if missing or len(variance) < len(blocks):
                raise ValueError("the network's probe points were not all reached by its forward pass")
            params = [p for p in model.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, [*conv_outputs, *params], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    zero = torch.zeros((), dtype=torch.float64)
    conv_grads, parameter_grads = grads[: len(convs)], grads[len(convs) :]
    grad_norm = torch.stack([zero if g is None else torch.linalg.vector_norm(g).double() for g in conv_grads])
    return Trace(
        variance=torch.stack([variance[i] for i in range(len(blocks))]).double(),
        similarity=torch.stack([similarity[i] for i in range(len(blocks))]).double(),
        grad_norm=grad_norm,
        loss=float(loss.detach()),
        parameter_grads=tuple(parameter_grads),
    )


__all__ = ["Trace", "channel_variance", "mean_cosine_similarity", "trace_network"]
