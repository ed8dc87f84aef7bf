"""Init-time probes of a transformer language model (:class:`normsearch.gpt.GPT`), read where norm
candidates differ: block outputs (the residual stream), branch outputs (attention and MLP), the attention
itself and the final norm.

One pass on a batch of byte windows (inputs, targets (N, L) int64), train mode, L = mean next-byte
cross-entropy (nats). With a (N, L, C) read at a probe point, per block b = 1 … B:

    residual_variance[b] = mean over channels of Var over the N·L tokens of the block output
    variance_growth      = least-squares slope of ln residual_variance over b (0: flat; ln r: ×r per block)
    branch_variance[b]   = (attention output, MLP output) variance, as residual_variance
    token_similarity[b]  = mean over sequences of the mean off-diagonal cosine similarity between the L
                           token vectors of one sequence (→ 1: rank collapse, Dong et al. 2021)
    massive_ratio[b]     = max |a| / median |a| over the block output (massive activations, ≫ 1)
    attention_entropy[b][h] = mean over sequences and queries of −Σ_k p log p (nats) of head h
    min_attention_entropy   = its minimum over heads and blocks (entropy collapse, Zhai et al. 2023)
    logit_scale[b]       = root mean square of the q·kᵀ/√d logits over causal (query, key) pairs
    grad_norm[b]         = ‖∇_θ L‖ over block b's parameters (as Xiong et al. 2020 plot it per layer)
    grad_ratio           = grad_norm[1] / grad_norm[B] (their Post-LN: late layers get the larger
                           gradients, more so in deeper stacks; Pre-LN: flat)
    saturation           = share of DyT/Derf slot inputs in the flat tail: |α·x| ≥ artanh(0.99) (DyT),
                           |α·x + s| ≥ erfinv(0.99) (Derf), over all such slots (None without them)
    final_similarity, final_massive_ratio: token similarity and max/median at the head's input (after
                           the final norm where there is one)
    step_loss_ratio      = L after one step of the training optimizer at the training lr ÷ L before
                           (AdamW's first step is sign-like: probe with it, not plain SGD)

The network's weights change in the last step: run it on a network that is thrown away afterwards.
Non-finite values propagate (the caller decides what is unstable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..gpt import GPT
from ..norm import UnifiedNorm
from ..task import LANGUAGE_MODEL

DYT_TAIL = math.atanh(0.99)
"""|α·x| from which tanh is within 1 % of ±1."""
DERF_TAIL = float(torch.erfinv(torch.tensor(0.99, dtype=torch.float64)))
"""|α·x + s| from which erf is within 1 % of ±1."""


@dataclass(frozen=True)
class TransformerProbe:
    """The quantities of the module docstring for one network and batch (tuples: one entry per block)."""

    residual_variance: tuple[float, ...]
    variance_growth: float
    branch_variance: tuple[tuple[float, float], ...]
    token_similarity: tuple[float, ...]
    massive_ratio: tuple[float, ...]
    attention_entropy: tuple[tuple[float, ...], ...]
    min_attention_entropy: float
    logit_scale: tuple[float, ...]
    grad_norm: tuple[float, ...]
    grad_ratio: float
    saturation: float | None
    final_similarity: float
    final_massive_ratio: float
    loss: float
    step_loss_ratio: float


def token_variance(a: Tensor) -> float:
    """Mean over channels of the variance over all tokens of a (N, L, C)."""
    return float(a.reshape(-1, a.shape[-1]).float().var(dim=0).mean())


def within_sequence_similarity(a: Tensor) -> float:
    """Mean over the N sequences of a (N, L, C) of the mean off-diagonal cosine similarity between its L
    token vectors: (‖Σ x̂‖² − Σ ‖x̂‖²) / (L (L − 1)), x̂ the unit tokens (all-zero tokens stay zero)."""
    x = a.float()
    unit = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    length = x.shape[1]
    total = unit.sum(dim=1).square().sum(-1) - unit.square().sum((1, 2))
    return float((total / (length * (length - 1))).mean())


def massive_ratio(a: Tensor) -> float:
    """max |a| / median |a| (inf when the median is 0)."""
    magnitude = a.detach().float().abs().flatten()
    median = float(magnitude.median())
    return float(magnitude.max()) / median if median > 0 else math.inf


def attention_entropy(probs: Tensor) -> Tensor:
    """Per head (H,): mean over sequences and queries of −Σ_k p log p of probs (N, H, L, L), 0 log 0 = 0."""
    p = probs.float()
    return -(p * p.clamp_min(1e-30).log()).sum(-1).mean(dim=(0, 2))


def causal_logit_rms(logits: Tensor) -> float:
    """Root mean square of logits (N, H, L, L) over the causal pairs key ≤ query."""
    length = logits.shape[-1]
    keep = torch.ones(length, length, dtype=torch.bool, device=logits.device).tril_()
    return float(logits.float()[..., keep].square().mean().sqrt())


def growth_slope(values: list[float]) -> float:
    """Least-squares slope of ln(values) over their index (non-positive values: inf)."""
    if any(not v > 0 for v in values):
        return math.inf
    if len(values) < 2:
        return 0.0
    y = torch.tensor(values, dtype=torch.float64).log()
    x = torch.arange(len(values), dtype=torch.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / x.square().sum())


def _saturated(slot: UnifiedNorm, x: Tensor) -> tuple[int, int]:
    """(elements in the flat tail, elements) of a DyT/Derf slot's input x."""
    if slot.shift is not None:
        tail = (slot.alpha * x + slot.shift).abs() >= DERF_TAIL
    else:
        tail = (slot.alpha * x).abs() >= DYT_TAIL
    return int(tail.sum()), tail.numel()


def _optimizer(
    name: str, params: list[nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of adamw, adam, sgd; got {name!r}")


def probe_transformer(
    model: GPT,
    inputs: Tensor,
    targets: Tensor,
    *,
    lr: float,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
) -> TransformerProbe:
    """The probes of the module docstring for ``model`` on (inputs, targets) (N, L) int64, N ≥ 1, L ≥ 2;
    the last step uses ``optimizer`` (``adamw``, ``adam``, ``sgd``) at ``lr``. ``model`` is changed."""
    blocks = model.block_modules()
    records: dict[str, list] = {"block": [], "attn": [], "mlp": [], "probs": [], "logits": [], "final": []}
    saturation = [0, 0]
    handles = []

    def keep(name: str):
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> None:
            records[name].append(output.detach())

        return hook

    def keep_saturation(slot: UnifiedNorm, args: tuple) -> None:
        tail, total = _saturated(slot, args[0].detach())
        saturation[0] += tail
        saturation[1] += total

    for block in blocks:
        handles += [
            block.register_forward_hook(keep("block")),
            block.attn.register_forward_hook(keep("attn")),
            block.mlp.register_forward_hook(keep("mlp")),
            block.attn.probs.register_forward_hook(keep("probs")),
            block.attn.logits.register_forward_hook(keep("logits")),
        ]
    handles += [
        s.register_forward_pre_hook(keep_saturation) for s in model.norm_slots() if s.alpha is not None
    ]
    head_input = model.final if model.final is not None else blocks[-1]
    handles.append(head_input.register_forward_hook(keep("final")))
    explicit = [a.explicit for a in model.attention_modules()]
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    try:
        for attention in model.attention_modules():
            attention.explicit = True
        with torch.enable_grad():
            loss = LANGUAGE_MODEL.loss(model(inputs), targets)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        for attention, before in zip(model.attention_modules(), explicit, strict=True):
            attention.explicit = before
    grad_of = {id(p): g for p, g in zip(params, grads, strict=True)}
    grad_norm = []
    for block in blocks:
        squares = [
            g.double().square().sum() for p in block.parameters() if (g := grad_of.get(id(p))) is not None
        ]
        grad_norm.append(float(torch.stack(squares).sum().sqrt()) if squares else 0.0)
    residual = [token_variance(a) for a in records["block"]]
    entropy = [tuple(float(h) for h in attention_entropy(p)) for p in records["probs"]]
    before = float(loss.detach())
    step = _optimizer(optimizer, params, lr, weight_decay)
    for p in params:
        p.grad = grad_of[id(p)]
    step.step()
    with torch.no_grad():
        after = float(LANGUAGE_MODEL.loss(model(inputs), targets))
    for p in params:
        p.grad = None
    return TransformerProbe(
        residual_variance=tuple(residual),
        variance_growth=growth_slope(residual),
        branch_variance=tuple(
            (token_variance(a), token_variance(m))
            for a, m in zip(records["attn"], records["mlp"], strict=True)
        ),
        token_similarity=tuple(within_sequence_similarity(a) for a in records["block"]),
        massive_ratio=tuple(massive_ratio(a) for a in records["block"]),
        attention_entropy=tuple(entropy),
        min_attention_entropy=min(min(e) for e in entropy),
        logit_scale=tuple(causal_logit_rms(x) for x in records["logits"]),
        grad_norm=tuple(grad_norm),
        grad_ratio=grad_norm[0] / grad_norm[-1] if grad_norm[-1] > 0 else math.inf,
        saturation=saturation[0] / saturation[1] if saturation[1] else None,
        final_similarity=within_sequence_similarity(records["final"][0]),
        final_massive_ratio=massive_ratio(records["final"][0]),
        loss=before,
        step_loss_ratio=after / before if before > 0 else math.inf,
    )


def text_batch(data: object, batch_size: int, context: int, seed: int) -> tuple[Tensor, Tensor]:
    """``batch_size`` training windows of ``context`` bytes at seeded random offsets of
    :class:`~normsearch.text.TextData` ``data``: (inputs, targets) (N, context) int64."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data.train) - context, (batch_size,), generator=generator)
    return data.batch(starts, "train", context)


__all__ = [
    "TransformerProbe",
    "attention_entropy",
    "causal_logit_rms",
    "growth_slope",
    "massive_ratio",
    "probe_transformer",
    "text_batch",
    "token_variance",
    "within_sequence_similarity",
]
