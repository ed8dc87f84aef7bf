"""One probe pass over a network: the raw per-depth curves of "Beyond BatchNorm", read through hooks.

On one batch, in train mode: forward, mean cross-entropy, backward, at the network's probe points
(:func:`probe_points`: the paper's networks name theirs; any other network gets block outputs and norm-slot
inputs found by structure). Forward hooks on the activation points reduce each a (N, C, *S) on the spot to

    variance(a)   = mean over channels c of Var_unbiased over (N, *S) of a[:, c]       (paper: activs_norms)
    similarity(a) = mean over i ≠ j of cos(a_i, a_j), a_i = a[i] flattened             (paper: activs_corr)

and forward hooks on the gradient points keep each conv output z (the input of the norm that follows it),
whose gradient is then

    grad_norm(z)  = ‖∂L/∂z‖_F over the whole batch tensor, L = batch-mean cross-entropy  (paper: grads_norms)

and, from the same backward pass, ∇θL for every trainable parameter θ (for the one-step probe, :mod:`.step`).

The similarity uses the normalized-sum identity instead of the N×N Gram matrix:
Σ_{i≠j} x̂_i·x̂_j = ‖Σ_i x̂_i‖² − Σ_i ‖x̂_i‖², with x̂_i = a_i / ‖a_i‖; a sample whose activations are all zero
counts as orthogonal to every other (the paper's code would divide by zero). The backward is
``torch.autograd.grad(L, z + parameters)``: one pass, ``.grad`` fields untouched. Hooks are removed and the
train/eval mode restored afterwards; the forward pass itself still updates running statistics (as any
train-mode forward does). Tokens-layout networks (N, *L, C) are read as (N, C, *L).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


@dataclass(frozen=True)
class ProbePoints:
    """Where one pass reads the network: ``blocks`` (modules whose output, or input if ``blocks_at_input``,
    is an activation point), ``grads`` (modules whose output, or input if ``grads_at_input``, is a gradient
    point), and
    ``channel_dim`` (1, or −1 for tokens-layout networks). ``ordered``: points are taken in forward-call
    order (foreign networks); otherwise in the listed order (the paper's networks)."""

    blocks: list[nn.Module]
    blocks_at_input: bool
    grads: list[nn.Module]
    grads_at_input: bool
    channel_dim: int
    ordered: bool


def residual_blocks(model: nn.Module, slots: list[nn.Module]) -> list[nn.Module]:
    """The outermost modules that are items of an ``nn.Sequential`` / ``nn.ModuleList``, are not containers
    themselves, and hold a norm slot strictly inside them (torchvision/timm ResNet, RegNet: each residual
    block; ViT: each transformer block), in registration order."""
    slot_ids = {id(m) for m in slots}
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        container = isinstance(module, nn.Sequential | nn.ModuleList)
        for child in module.children():
            is_block = container and not isinstance(child, nn.Sequential | nn.ModuleList)
            if is_block and any(id(m) in slot_ids for m in child.modules() if m is not child):
                found.append(child)
            else:
                visit(child)

    visit(model)
    return found


def probe_points(model: nn.Module) -> ProbePoints:
    """The paper's networks: their ``block_outputs()`` and ``conv_layers()`` outputs. Any other network:
    gradients at the inputs of its normalization slots (the :class:`~normsearch.norm.UnifiedNorm` modules,
    whose input is the conv / linear output before the norm, the paper's z), and activations at the outputs
    of its residual blocks (:func:`residual_blocks`), or at the slot inputs when it has fewer than two."""
    from ..norm import UnifiedNorm

    if hasattr(model, "block_outputs") and hasattr(model, "conv_layers"):
        return ProbePoints(model.block_outputs(), False, model.conv_layers(), False, 1, ordered=False)
    slots = [m for m in model.modules() if isinstance(m, UnifiedNorm)]
    if not slots:
        raise ValueError(
            "the network has no normalization slots built by normsearch's norm_layer: "
            "a foreign model must build its norms with the norm_layer it is given"
        )
    channel_dim = -1 if slots[0].config.layout == "tokens" else 1
    blocks = residual_blocks(model, slots)
    if len(blocks) < 2:
        return ProbePoints(slots, True, slots, True, channel_dim, ordered=True)
    return ProbePoints(blocks, False, slots, True, channel_dim, ordered=True)


def trace_network(model: nn.Module, inputs: Tensor, targets: Tensor) -> Trace:
    """Probe ``model`` on one batch at its :func:`probe_points`; see the module docstring.

    inputs (N, C, H, W) with N ≥ 2, targets (N,) class indices. Non-finite values propagate into the curves
    (callers decide what is unstable); nothing here raises on NaN or inf.
    """
    if inputs.shape[0] < 2:
        raise ValueError(f"probe batch needs at least 2 samples, got {inputs.shape[0]}")
    points = probe_points(model)
    stats: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
    grad_points: dict[tuple[int, int], Tensor] = {}
    calls = itertools.count()

    def key(index: int) -> tuple[int, int]:
        return (next(calls), index) if points.ordered else (index, next(calls))

    def record_stats(index: int, a: Tensor) -> None:
        if isinstance(a, Tensor):
            with torch.no_grad():
                a = a.movedim(-1, 1) if points.channel_dim == -1 else a
                stats[key(index)] = (channel_variance(a), mean_cosine_similarity(a))

    def keep_stats(index: int):
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> None:
            record_stats(index, output)

        return hook

    def keep_input_stats(index: int):
        def hook(_module: nn.Module, args: tuple) -> None:
            record_stats(index, args[0])

        return hook

    def keep_output(index: int):
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> None:
            grad_points[key(index)] = output

        return hook

    def keep_input(index: int):
        def hook(_module: nn.Module, args: tuple) -> None:
            grad_points[key(index)] = args[0]

        return hook

    if points.blocks_at_input:
        handles = [m.register_forward_pre_hook(keep_input_stats(i)) for i, m in enumerate(points.blocks)]
    else:
        handles = [m.register_forward_hook(keep_stats(i)) for i, m in enumerate(points.blocks)]
    if points.grads_at_input:
        handles += [m.register_forward_pre_hook(keep_input(i)) for i, m in enumerate(points.grads)]
    else:
        handles += [m.register_forward_hook(keep_output(i)) for i, m in enumerate(points.grads)]
    was_training = model.training
    try:
        model.train()
        with torch.enable_grad():
            loss = F.cross_entropy(model(inputs), targets)
            z = [grad_points[k] for k in sorted(grad_points)]
            reached = {k[0] if not points.ordered else k[1] for k in grad_points}
            if (
                len(reached) < len(points.grads)
                or len({k[0] if not points.ordered else k[1] for k in stats}) < len(points.blocks)
                or any(not t.requires_grad for t in z)
            ):
                raise ValueError("the network's probe points were not all reached by its forward pass")
            params = [p for p in model.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, [*z, *params], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    zero = torch.zeros((), dtype=torch.float64)
    point_grads, parameter_grads = grads[: len(z)], grads[len(z) :]
    grad_norm = torch.stack(
        [zero if g is None else torch.linalg.vector_norm(g).double() for g in point_grads]
    )
    ordered_stats = [stats[k] for k in sorted(stats)]
    return Trace(
        variance=torch.stack([v for v, _ in ordered_stats]).double(),
        similarity=torch.stack([s for _, s in ordered_stats]).double(),
        grad_norm=grad_norm,
        loss=float(loss.detach()),
        parameter_grads=tuple(parameter_grads),
    )


__all__ = [
    "ProbePoints",
    "Trace",
    "channel_variance",
    "mean_cosine_similarity",
    "probe_points",
    "residual_blocks",
    "trace_network",
]
